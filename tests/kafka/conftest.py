"""The Kafka cluster fixture (tests/kafka/cluster.py) and the history the job tests stream, for this folder."""

from typing import Any

import msgspec
import pytest

from configs import Settings
from synthetic import generate
from tests.kafka.cluster import kafka_cluster

__all__ = ["history", "kafka_cluster"]


@pytest.fixture(scope="session")
def history(local_settings: Settings) -> Any:
    """400 accounts over 6 days: 6,989 transactions, 1,480 labels."""
    spec = msgspec.structs.replace(local_settings.generator, accounts=400, days=6, seed=5, genuine_label_rate=0.2)
    return generate(spec)
