"""What a restarted controller reads back (actors/controller.py): its record and the Ray names it looks up (no Ray)."""

from __future__ import annotations

import msgspec

from actors.controller import ControllerRecord, assignment, ray_actor_name
from configs import Settings


def test_the_record_round_trips_with_reloaded_rules(local_settings: Settings) -> None:
    rules = local_settings.scoring.rules
    assert rules  # the bundled config's rules, as a reload would hand them over
    record = ControllerRecord(generation=2, names=["scoring-0-0", "scoring-2-1"], plan=assignment(4, 2),
                              stage_plan=assignment(4, 2), rules=tuple(rules), restarts=[1, 0], controller_restarts=1)  # fmt: skip
    assert msgspec.json.decode(msgspec.json.encode(record), type=ControllerRecord) == record
    without = msgspec.structs.replace(record, rules=None)  # the config's rules: none reloaded
    assert msgspec.json.decode(msgspec.json.encode(without), type=ControllerRecord) == without


def test_scoring_actors_of_two_jobs_have_different_ray_names(local_settings: Settings) -> None:
    topics = msgspec.structs.replace(local_settings.kafka.topics, transactions=msgspec.structs.replace(
        local_settings.kafka.topics.transactions, name="other.transactions"))  # fmt: skip
    other = msgspec.structs.replace(local_settings, kafka=msgspec.structs.replace(local_settings.kafka, topics=topics))
    assert ray_actor_name(local_settings, "scoring-0-0") == "fraudstream-transactions-scoring-0-0"
    assert ray_actor_name(other, "scoring-0-0") != ray_actor_name(local_settings, "scoring-0-0")
