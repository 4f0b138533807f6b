"""Feature-quality metrics: one module per metric family."""
