"""Privacy-mask filters: fill (black), pixelate and blur; each a plugin of its own."""
