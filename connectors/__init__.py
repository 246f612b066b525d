"""Adapters to the world outside the process: Kafka clients and topics, the embedded broker, the MLflow
registry, the checkpoint store and Parquet histories. Actors and entry points use them; nothing here imports
``actors`` or ``pipelines``."""
