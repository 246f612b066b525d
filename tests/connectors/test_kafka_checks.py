"""The one-line messages of connectors/kafka_checks.py, built without a broker: a refused login or certificate,
topics the principal may not use or create, configs it may not read; and which failures end the wait for Kafka."""

from __future__ import annotations

import ssl
from pathlib import Path

import msgspec
import pytest
from aiokafka.errors import KafkaConnectionError, SaslAuthenticationFailed, UnsupportedSaslMechanismError

from actors.clients import kafka_access
from configs import KafkaSettings, Settings, TopicSettings
from connectors.kafka_checks import (
    OPERATIONS_UNKNOWN,
    TopicAccess,
    access_denied_message,
    configs_unreadable_notice,
    connect_failure,
    create_denied_message,
    create_failed_message,
    denied_operations,
    login_failed_message,
    principal,
    tls_failed_message,
    unreachable_message,
)

SERVER = "kafka-1.example.internal:9096"


@pytest.fixture
def sasl(tmp_path: Path) -> KafkaSettings:
    ca = tmp_path / "ca.pem"
    ca.write_text("")
    return KafkaSettings(bootstrap_servers=(SERVER,), security_protocol="SASL_SSL", ssl_ca_file=str(ca),
                         sasl_mechanism="SCRAM-SHA-512", sasl_username="fraudstream",
                         sasl_password_env="FRAUDSTREAM_KAFKA_SASL_PASSWORD")  # fmt: skip


def _verify_error(code: int, message: str) -> ssl.SSLCertVerificationError:
    error = ssl.SSLCertVerificationError(1, f"[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: {message}")
    error.verify_code, error.verify_message = code, message
    return error


def test_a_refused_login_names_the_broker_mechanism_user_and_password_variable(sasl: KafkaSettings) -> None:
    assert login_failed_message(sasl, SERVER) == (
        f"kafka error: authentication failed at {SERVER} (SASL SCRAM-SHA-512 as 'fraudstream'): "
        "check kafka.sasl_username and the password in $FRAUDSTREAM_KAFKA_SASL_PASSWORD"
    )
    message, fatal = connect_failure(sasl, SERVER, SaslAuthenticationFailed("invalid credentials"))
    assert fatal and message == login_failed_message(sasl, SERVER)


def test_an_untrusted_certificate_names_the_broker_and_the_ca_file(sasl: KafkaSettings) -> None:
    error = _verify_error(19, "self-signed certificate in certificate chain")
    assert tls_failed_message(sasl, SERVER, error) == (
        f"kafka error: TLS handshake with {SERVER} failed: certificate not trusted (self-signed certificate in "
        f"certificate chain) by kafka.ssl_ca_file {sasl.ssl_ca_file}; set kafka.ssl_ca_file to the CA that signed "
        "the brokers' certificates"
    )
    system = msgspec.structs.replace(sasl, ssl_ca_file=None)
    assert "by the system CAs (kafka.ssl_ca_file is not set);" in tls_failed_message(system, SERVER, error)
    assert connect_failure(sasl, SERVER, error) == (tls_failed_message(sasl, SERVER, error), True)


def test_a_certificate_of_another_name_or_out_of_date_says_so(sasl: KafkaSettings) -> None:
    mismatch = tls_failed_message(sasl, "10.0.0.7:9096", _verify_error(64, "IP address mismatch, certificate is not "
                                                                              "valid for '10.0.0.7'."))  # fmt: skip
    assert mismatch.startswith("kafka error: TLS handshake with 10.0.0.7:9096 failed: the broker's certificate does "
                               "not name 10.0.0.7 (IP address mismatch")  # fmt: skip
    assert "kafka.bootstrap_servers" in mismatch and "kafka.ssl_check_hostname: false" in mismatch
    expired = tls_failed_message(sasl, SERVER, _verify_error(10, "certificate has expired"))
    assert expired == (f"kafka error: TLS handshake with {SERVER} failed: the broker's certificate has expired; "
                       "renew the brokers' certificates (or check the clock)")  # fmt: skip


def test_only_what_no_retry_mends_ends_the_wait_at_once(sasl: KafkaSettings) -> None:
    assert connect_failure(sasl, SERVER, ConnectionRefusedError(111, "refused")) == (f"{SERVER}: connection refused",
                                                                                      False)  # fmt: skip
    assert connect_failure(sasl, SERVER, TimeoutError()) == (f"{SERVER}: no answer in time", False)
    handshake = ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number")
    handshake.reason = "WRONG_VERSION_NUMBER"
    assert connect_failure(sasl, SERVER, handshake) == (f"{SERVER}: TLS handshake failed (WRONG_VERSION_NUMBER)", False)
    message, fatal = connect_failure(sasl, SERVER, UnsupportedSaslMechanismError("enabled: ['PLAIN']"))
    assert fatal and message.startswith(f"kafka error: SASL SCRAM-SHA-512 refused at {SERVER}") and (
        "set kafka.sasl_mechanism" in message)  # fmt: skip
    assert unreachable_message(SERVER, 30, [f"{SERVER}: connection refused"], None) == (
        f"Kafka at {SERVER} did not answer within 30s ({SERVER}: connection refused); "
        "check kafka.bootstrap_servers and kafka.security_protocol"
    )
    assert "(KafkaConnectionError('x'))" in unreachable_message(SERVER, 30, [], KafkaConnectionError("x"))


def test_the_principal_is_what_kafka_acls_takes(sasl: KafkaSettings, tmp_path: Path) -> None:
    assert principal(sasl) == "User:fraudstream"
    assert principal(KafkaSettings()) == "User:ANONYMOUS"
    (tmp_path / "c.pem").write_text("")
    (tmp_path / "c.key").write_text("")
    mtls = KafkaSettings(security_protocol="SSL", ssl_cert_file=str(tmp_path / "c.pem"),
                         ssl_key_file=str(tmp_path / "c.key"))  # fmt: skip
    assert principal(mtls) == f"the principal of the client certificate {tmp_path / 'c.pem'}"


def test_authorized_operations_are_read_from_kafkas_bit_field() -> None:
    assert TopicAccess.from_answer("tx", 0, 0b100001000).operations == {"Read", "Describe"}  # 264
    assert TopicAccess.from_answer("al", 3, 0b100010000).operations == {"Write", "Describe"}  # missing, may write
    unknown = TopicAccess.from_answer("tx", 0, OPERATIONS_UNKNOWN)
    assert unknown.operations is None and not unknown.hidden
    assert TopicAccess.from_answer("x", 29, OPERATIONS_UNKNOWN).hidden


def test_denied_operations_name_each_topic_and_operation_the_job_lacks() -> None:
    access = {
        "tx": TopicAccess("tx", 29, None),  # no ACL at all: not even Describe
        "labels": TopicAccess("labels", 0, frozenset({"Read", "Describe"})),
        "alerts": TopicAccess("alerts", 0, frozenset({"Describe", "Read"})),  # Read, not Write
        "risk": TopicAccess("risk", 0, frozenset({"Read", "Write", "Describe"})),
        "embedded": TopicAccess("embedded", 0, None),  # a broker that does not say: not judged
    }
    needs = {"tx": ("Read",), "labels": ("Read",), "alerts": ("Write",), "risk": ("Read", "Write"),
             "embedded": ("Read",)}  # fmt: skip
    assert denied_operations(access, needs) == {"Read": ["tx"], "Write": ["alerts"]}
    assert denied_operations(access, {"tx": ()}) == {"Describe": ["tx"]}  # no need given: Describe
    assert denied_operations(access, {"absent-from-answer": ("Read",)}) == {}


def test_the_access_line_names_principal_operations_topics_and_the_acls_to_add() -> None:
    line = access_denied_message("User:fraudstream", SERVER, {"Read": ["tx", "labels"], "Write": ["alerts"]})
    assert line == (
        "kafka error: User:fraudstream is not authorized to Read topics 'tx', 'labels' and to Write topic 'alerts' "
        f"at {SERVER}; fix: grant it: kafka-acls.sh --add --allow-principal User:fraudstream --operation Read "
        "--topic tx --topic labels; kafka-acls.sh --add --allow-principal User:fraudstream --operation Write "
        "--topic alerts"
    )
    assert "\n" not in line


def test_a_missing_topic_the_principal_may_not_create_gives_both_fixes() -> None:
    topic = TopicSettings(name="transactions", partitions=24, replication_factor=3, configs={"min.insync.replicas": 2})
    assert create_denied_message("User:fraudstream", SERVER, [topic]) == (
        f"kafka error: topic 'transactions' does not exist at {SERVER} and User:fraudstream is not authorized to "
        "create it; fix: create it as an admin (kafka-topics.sh --create --topic transactions --partitions 24 "
        "--replication-factor 3 --config min.insync.replicas=2) or grant User:fraudstream Create on it "
        "(kafka-acls.sh --add --allow-principal User:fraudstream --operation Create --topic transactions)"
    )
    two = create_denied_message("User:fraudstream", SERVER, [topic, TopicSettings(name="labels", partitions=24)])
    assert two.startswith("kafka error: topics 'transactions', 'labels' do not exist at")
    assert "--topic transactions --topic labels)" in two and "create them as an admin" in two


def test_other_create_refusals_name_kafkas_error() -> None:
    failures = [("tx", 38, "Replication factor: 3 larger than available brokers: 1."), ("dlq", 40, None)]
    assert create_failed_message(SERVER, failures) == (
        f"kafka error: could not create topics at {SERVER}: 'tx': InvalidReplicationFactorError (Replication "
        "factor: 3 larger than available brokers: 1.), 'dlq': InvalidConfigurationError; check kafka.topics "
        "(partitions, replication_factor, configs)"
    )


def test_unreadable_configs_are_one_notice() -> None:
    assert configs_unreadable_notice("User:fraudstream", ["alerts"]) == (
        "notice: not comparing the configs of topic 'alerts' with kafka.topics: User:fraudstream is not authorized "
        "to DescribeConfigs on it (grant it to have it checked at start)"
    )


def test_the_job_reads_and_writes_what_its_actors_do(local_settings: Settings) -> None:
    assert kafka_access(local_settings) == {
        "transactions": ("Read",), "labels": ("Read",), "alerts": ("Write",), "transactions.dlq": ("Write",),
        "terminal.deltas": ("Read", "Write"), "terminal.risk": ("Read", "Write"),
    }  # fmt: skip
    rekey = msgspec.structs.replace(local_settings, stream=msgspec.structs.replace(local_settings.stream,
                                                                                   wrong_key="rekey"))  # fmt: skip
    assert kafka_access(rekey)["transactions"] == ("Read", "Write")  # records keyed anew go back to transactions
