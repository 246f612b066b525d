"""Fixtures for the scorer tests: the feature registry, batches, and features of a generated history."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import msgspec
import numpy as np
import pytest

from configs import FeatureSettings
from features import FeatureBatch, FeatureRegistry
from features.offline import build_feature_table
from models.checked_settings import load_settings
from synthetic import generate


@pytest.fixture(scope="session")
def registry() -> FeatureRegistry:
    return FeatureRegistry.from_settings(FeatureSettings())


@pytest.fixture(scope="session")
def make_batch(registry: FeatureRegistry) -> Callable[[np.ndarray], FeatureBatch]:
    """A FeatureBatch of registry-ordered rows, none late."""

    def make(values: np.ndarray) -> FeatureBatch:
        return FeatureBatch(values, np.zeros(len(values), dtype=bool), registry.names, registry.version)

    return make


@dataclass(frozen=True)
class Generated:
    """Feature vectors of a generated history in event-time order, with its ground truth."""

    values: np.ndarray
    is_fraud: np.ndarray
    scenario: np.ndarray


@pytest.fixture(scope="session")
def generated(registry: FeatureRegistry) -> Generated:
    """1,000 accounts x 14 days (about 41k events, 250 frauds), features built offline as the actors do."""
    settings = load_settings()
    history = generate(msgspec.structs.replace(settings.generator, accounts=1_000, days=14, seed=13))
    table = build_feature_table(history.transactions, history.labels, settings.features, partitions=1)
    values = np.column_stack([table.column(name).to_numpy() for name in registry.names]).astype(np.float64)
    return Generated(
        values=values,
        is_fraud=table.column("is_fraud").to_numpy().astype(bool),
        scenario=np.array(table.column("fraud_scenario").to_pylist(), dtype=object),
    )
