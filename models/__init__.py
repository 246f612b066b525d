"""fraudstream models."""
