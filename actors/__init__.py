"""fraudstream actors."""
