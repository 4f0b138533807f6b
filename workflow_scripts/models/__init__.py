"""Model families (one module each) and the registry that builds them by name."""
