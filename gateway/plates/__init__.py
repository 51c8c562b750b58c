"""Number plates: text rules (``text``), the store of reads with search, watchlists and
retention (``store``)."""
