"""The scoring job against the real 3-broker cluster over SASL_SSL, with settings shaped like configs/cluster.yaml
(the CA file, hostname check on, the SCRAM password from the environment) as the job's principal, whose ACLs
let it read and write its topics and nothing else: it may not create them, nor read their configs. The topics
are created by an admin beforehand, replicated 3 times, as a platform team does.

The job runs as ``python -m pipelines.stream --config …`` does under ``ray job submit``: a process of its own
with the local Ray it starts. Its actors read the SASL password from the environment of the Ray workers, and a
Ray already running in the test process (the session's) has the environment it started with, which may predate
the cluster fixture's variables.

A wrong password, a CA that did not sign the brokers' certificates and a principal without Read on the
transactions each stop the same command at start-up with exit code 2 and one line saying what to fix.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from contracts.records import decode_alert
from models.checked_settings import load_settings
from tests.kafka.cluster import KafkaCluster
from tests.kafka.jobkit import (
    CLUSTER_YAML,
    as_user,
    grant_topic_acls,
    job_env,
    prepare_topics,
    produce,
    read_alerts,
    run_job_until_scored,
    run_on_embedded_broker,
    sasl_config,
    start_job_expecting_failure,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def ray_tmp() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="fss", dir="/tmp") as folder:  # short: Ray's socket paths
        yield folder


# -- the tests ---------------------------------------------------------------------------------------------------


def test_the_job_scores_every_transaction_over_sasl_ssl_with_alerts_as_on_the_embedded_broker(
    kafka_cluster: KafkaCluster, kafka_broker: str, history: Any, tmp_path: Path, ray_tmp: str
) -> None:
    config = sasl_config(kafka_cluster, tmp_path / "sasl", "sasl")
    job_kafka = prepare_topics(kafka_cluster, config)
    producer = load_settings(config).producer
    report = produce(as_user(kafka_cluster, job_kafka, "admin"), producer, history)  # the job may not write them
    assert report.transactions == history.transactions.num_rows

    status, output = run_job_until_scored(config, report.transactions, job_env(RAY_TMPDIR=ray_tmp),
                                          tmp_path / "sasl.log")
    partitions = status.partitions.values()
    assert sum(p.next_offset for p in partitions) == report.transactions  # every offset, once
    assert all(p.lag == 0 for p in partitions) and status.totals.scored == report.transactions
    assert status.totals.dead_letters == 0 and status.totals.offset_gaps == 0
    assert {p.actor for p in partitions} == {"scoring-0-0", "scoring-0-1"}
    # the job may not read topic configs: one notice, not a false "min.insync.replicas=unset" per topic
    assert "notice: not comparing the configs of topics" in output and "exists with" not in output, output[-3000:]

    records = read_alerts(as_user(kafka_cluster, job_kafka, "reader"))  # the reader's ACL: Read on alerts only
    alerts = [decode_alert(r.value) for r in records]
    assert len(alerts) == status.totals.alerts > 0
    produced_ids = set(history.transactions.column("transaction_id").to_pylist())
    assert all(a.transaction_id in produced_ids for a in alerts)
    assert all(r.key == a.account_id.encode() for r, a in zip(records, alerts, strict=True))
    assert len({a.alert_id for a in alerts}) == len(alerts)

    # the same history and settings on the embedded broker (PLAINTEXT) give the same alerts
    embedded, reference_kafka = run_on_embedded_broker(kafka_broker, tmp_path / "embedded", "reference", history,
                                                       producer)
    expected = [decode_alert(r.value) for r in read_alerts(reference_kafka)]
    assert embedded.totals.alerts == len(expected) == len(alerts)
    assert sorted((a.transaction_id, a.decision) for a in alerts) == sorted((a.transaction_id, a.decision) for a in expected)


def test_a_wrong_password_stops_the_start_in_one_line(kafka_cluster: KafkaCluster, tmp_path: Path) -> None:
    config = sasl_config(kafka_cluster, tmp_path, "pw")
    variable = kafka_cluster.password_env("job")
    code, lines, seconds = start_job_expecting_failure(config, job_env(**{variable: "not-the-password"}))
    first = kafka_cluster.sasl_ssl_bootstrap.split(",")[0]
    assert (code, lines) == (2, [
        f"error: kafka error: authentication failed at {first} (SASL SCRAM-SHA-512 as 'fraudstream'): "
        f"check kafka.sasl_username and the password in ${variable}"
    ]), lines  # fmt: skip
    assert not (tmp_path / "status.json").exists()
    print(f"wrong password refused in {seconds:.1f}s")


def test_a_ca_that_did_not_sign_the_brokers_stops_the_start_in_one_line(
    kafka_cluster: KafkaCluster, tmp_path: Path
) -> None:
    config = sasl_config(kafka_cluster, tmp_path, "ca", ssl_ca_file=str(kafka_cluster.other_ca_file))
    code, lines, seconds = start_job_expecting_failure(config, job_env())
    first = kafka_cluster.sasl_ssl_bootstrap.split(",")[0]
    assert (code, lines) == (2, [
        f"error: kafka error: TLS handshake with {first} failed: certificate not trusted (self-signed certificate "
        f"in certificate chain) by kafka.ssl_ca_file {kafka_cluster.other_ca_file}; set kafka.ssl_ca_file to the "
        "CA that signed the brokers' certificates"
    ]), lines  # fmt: skip
    assert not (tmp_path / "status.json").exists()
    print(f"untrusted certificate refused in {seconds:.1f}s")


def test_a_principal_that_may_not_read_the_transactions_stops_the_start_in_one_line(
    kafka_cluster: KafkaCluster, tmp_path: Path
) -> None:
    """An assigned consumer on a topic it may not read would retry "not authorized" forever: the start asks the
    brokers first. Without Read on transactions (its only ACL there) the job may not even describe the topic."""
    config = sasl_config(kafka_cluster, tmp_path, "deny")
    prepare_topics(kafka_cluster, config, without={("Read", "transactions")})
    code, lines, seconds = start_job_expecting_failure(config, job_env())
    assert (code, lines) == (2, [
        f"error: kafka error: User:fraudstream is not authorized to Read topic 'deny.transactions' at "
        f"{kafka_cluster.sasl_ssl_bootstrap}; fix: grant it: kafka-acls.sh --add --allow-principal User:fraudstream "
        "--operation Read --topic deny.transactions"
    ]), lines  # fmt: skip
    assert not (tmp_path / "status.json").exists()
    print(f"missing ACL refused in {seconds:.1f}s")


def test_missing_topics_the_job_may_not_create_stop_the_start_in_one_line(
    kafka_cluster: KafkaCluster, tmp_path: Path
) -> None:
    """The job's principal may describe its topics' names (its ACLs are on the names), so the brokers say they
    do not exist; it may not create them."""
    config = sasl_config(kafka_cluster, tmp_path, "absent")
    kafka = load_settings(config).kafka
    standard = yaml.safe_load(CLUSTER_YAML.read_text())["kafka"]["topics"]
    grant_topic_acls(kafka_cluster, {standard[key]["name"]: getattr(kafka.topics, key).name for key in standard})
    code, lines, _ = start_job_expecting_failure(config, job_env())
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith(
        "error: kafka error: topics 'absent.transactions', 'absent.labels', 'absent.alerts', 'absent.transactions.dlq', "
        f"'absent.terminal.deltas', 'absent.terminal.risk' do not exist at {kafka_cluster.sasl_ssl_bootstrap} and "
        "User:fraudstream is not authorized to create them; fix: create them as an admin (kafka-topics.sh --create "
        "--topic absent.transactions --partitions 4 --replication-factor 3 --config min.insync.replicas=2; "
    ), lines[0]
    assert lines[0].endswith(
        "or grant User:fraudstream Create on them (kafka-acls.sh --add --allow-principal User:fraudstream --operation "
        "Create --topic absent.transactions --topic absent.labels --topic absent.alerts --topic absent.transactions.dlq "
        "--topic absent.terminal.deltas --topic absent.terminal.risk)"
    ), lines[0]
