"""Built-in video analyzers (``gateway_register_analyzers``)."""
