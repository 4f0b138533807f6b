"""Image sources: one module per ``datasets.<name>.source``."""
