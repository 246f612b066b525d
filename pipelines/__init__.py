"""fraudstream pipelines."""
