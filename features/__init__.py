"""fraudstream features."""
