"""Rules in a YAML file, changed while the job runs: applied without a restart, an invalid change refused.

Real Ray actors on the embedded broker; the job's own status loop (`StreamJob.run`) notices the change.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import msgspec
import pytest

from contracts.records import decode_alert
from features import FeatureRegistry
from models.rules import load_rules_file
from synthetic import generate
from tests.integration.streamkit import consume_all, produce, wait_scored

pytestmark = [pytest.mark.integration, pytest.mark.slow]

import asyncio  # noqa: E402


def _write(path: Path, rules: str) -> None:
    path.write_text(f"rules:\n{rules}")


def _rules_versions(job) -> set[str | None]:
    return {actor.rules_version for actor in job.status().actors}


def test_a_changed_rules_file_is_applied_while_running_and_a_bad_one_refused(
    stream_settings, kafka_broker, job_factory, local_settings, tmp_path: Path
) -> None:
    history = generate(msgspec.structs.replace(local_settings.generator, accounts=300, days=12, seed=8))
    table = history.transactions
    first, rest = table.slice(0, table.num_rows // 2), table.slice(table.num_rows // 2)
    rules_file = tmp_path / "rules.yaml"
    _write(rules_file, '  - {name: never, when: "amount > 1000000000", action: review, score: 0.97}\n')
    base = stream_settings(status_interval_s=0.2)
    names = FeatureRegistry.from_settings(base.features).names
    scoring = msgspec.structs.replace(base.scoring, rules_file=str(rules_file),
                                      rules=load_rules_file(str(rules_file), names))
    store = tmp_path / "mlruns" / "mlflow.db"
    mlflow = msgspec.structs.replace(base.mlflow, tracking_uri=f"sqlite:///{store}")
    settings = msgspec.structs.replace(base, scoring=scoring, mlflow=mlflow)

    produce(settings, kafka_broker, first, None)
    job = job_factory(settings, actors=2)
    done = threading.Event()
    runner = threading.Thread(target=job.run, kwargs={"until": lambda _: done.is_set()})
    runner.start()
    try:
        wait_scored(job, first.num_rows)
        (before_version,) = _rules_versions(job)
        alerts = asyncio.run(consume_all(settings, kafka_broker, settings.kafka.topics.alerts.name))
        seen_before = {decode_alert(r.value).alert_id for r in alerts}
        assert not any("big_amount" in decode_alert(r.value).reasons.rules for r in alerts)

        # the analyst edits the file: a new rule, picked up without a restart
        _write(rules_file, '  - {name: big_amount, when: "amount > 150", action: review, score: 0.97}\n')
        deadline = time.monotonic() + 30
        # each actor installs the rules between its own micro-batches: wait until every actor has
        while (versions := _rules_versions(job)) == {before_version} or len(versions) != 1:
            assert time.monotonic() < deadline, "the changed rules file was not applied"
            time.sleep(0.2)
        (after_version,) = versions
        assert after_version != before_version

        produce(settings, kafka_broker, rest, history.labels)
        status = wait_scored(job, table.num_rows)
        assert status.totals.scored == table.num_rows
        alerts = [decode_alert(r.value) for r in asyncio.run(
            consume_all(settings, kafka_broker, settings.kafka.topics.alerts.name))]
        new = [a for a in alerts if a.alert_id not in seen_before]
        big = [a for a in new if "big_amount" in a.reasons.rules]
        assert big and all(a.model_versions["rules"] == after_version for a in big)
        rest_ids = set(rest.column("transaction_id").to_pylist())
        amounts = dict(zip(rest.column("transaction_id").to_pylist(), rest.column("amount").to_pylist()))
        assert all(a.transaction_id in rest_ids and amounts[a.transaction_id] > 150 for a in big)
        # every large payment of the second half got the new rule's alert
        assert {a.transaction_id for a in big} == {t for t, amount in amounts.items() if amount > 150}

        # an invalid edit is refused with one line; the actors keep deciding with the last good rules
        _write(rules_file, '  - {name: typo, when: "amountt > 5", action: review, score: 0.97}\n')
        deadline = time.monotonic() + 30
        while "amountt" not in (error := job.status().rules_file.error or ""):
            assert time.monotonic() < deadline, f"the invalid rules file was not reported: {error!r}"
            time.sleep(0.2)
        assert "\n" not in error
        assert _rules_versions(job) == {after_version}
    finally:
        done.set()
        runner.join(timeout=120)
    assert not runner.is_alive()

    # on stopping, the job logged what each partition's online classifier learned as a version of fraud-online
    from mlflow import MlflowClient
    from mlflow.artifacts import download_artifacts

    from models.online import OnlineClassifierSource

    client = MlflowClient(f"sqlite:///{store}")
    (version,) = client.search_model_versions("name = 'fraud-online'")
    folder = Path(download_artifacts(artifact_uri=version.source, dst_path=str(tmp_path / "online")))
    learned = 0
    for partition in range(4):
        source = OnlineClassifierSource.from_snapshot(
            settings.scoring.online, FeatureRegistry.from_settings(settings.features),
            (folder / f"partition-{partition}.bin").read_bytes(), scoring.review_threshold, scoring.block_threshold)
        assert len(source.buffer) == 0  # the model, not the held vectors
        learned += source.frauds_learned + source.genuine_learned
    run = client.get_run(version.run_id)
    assert learned == run.data.metrics["labels_learned"] > 0
    assert version.tags["online_version"] == source.version
