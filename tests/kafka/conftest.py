"""The Kafka cluster fixture (tests/kafka/cluster.py) for the tests of this folder."""

from tests.kafka.cluster import kafka_cluster

__all__ = ["kafka_cluster"]
