"""Built-in event sinks: plugins that pass gateway events on to other systems."""
