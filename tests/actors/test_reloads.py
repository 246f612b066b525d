"""Rules reloaded while running reach every partition between two micro-batches (no broker, no Ray)."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.clients import Clients
from actors.partition import PartitionProcessor
from actors.reloads import Reloads
from actors.serving import ClassifierServing
from actors.terminal_stage import BroadcastRisk
from configs import ConfigError, RuleSettings
from features import FeatureEngine
from tests.actors.fakes import small_settings


def test_reloaded_rules_are_installed_between_micro_batches_and_given_to_arriving_partitions(tmp_path: Path) -> None:
    settings = small_settings(tmp_path)
    reloads = Reloads(settings, "actor-0", ClassifierServing(settings), Clients())
    broadcast = BroadcastRisk(FeatureEngine.terminal_risk_for(settings.features), 2)
    scoring = PartitionProcessor(settings, 0, broadcast)
    before = scoring.scorer.model_versions["rules"]

    fewer = settings.scoring.rules[:2]
    version = reloads.set_rules(fewer)
    assert version != before and reloads.pending
    assert scoring.scorer.model_versions["rules"] == before  # not in the middle of a micro-batch
    reloads.install({0: scoring})
    assert scoring.scorer.model_versions["rules"] == version and not reloads.pending

    arriving = PartitionProcessor(settings, 1, broadcast)
    reloads.configure(arriving)
    assert arriving.scorer.model_versions["rules"] == version
    assert reloads.set_rules(fewer) == version and not reloads.pending  # the same rules again: nothing to install


def test_rules_that_do_not_compile_are_refused_and_the_old_ones_stay(tmp_path: Path) -> None:
    settings = small_settings(tmp_path)
    reloads = Reloads(settings, "actor-0", ClassifierServing(settings), Clients())
    with pytest.raises(ConfigError):
        reloads.set_rules((RuleSettings(name="nonsense", when="no_such_feature > 1"),))
    assert reloads.rules is None and not reloads.pending
