"""Why Kafka refuses this client, in one line each: a failed login or TLS handshake, an ACL that denies a topic.

aiokafka reports a failed SASL login or TLS handshake only as ``KafkaConnectionError("Unable to bootstrap")``,
with the cause in its log. :func:`probe_connection` opens one connection itself, as aiokafka does, and
keeps the exception: :func:`connect_failure` turns it into a line naming the broker, what failed and the
setting to fix.

What a principal may do on each topic comes from a Metadata request of version 8 (KIP-430: the topics'
authorized operations), which aiokafka does not send itself: :func:`describe_access`. The request changes
nothing, and it is answered for a topic that does not exist (yet) as well, when the principal may describe
that name. An assigned consumer on a topic it may not read never fails, it retries "not authorized"
forever: the job asks first (:func:`denied_operations`).

Every ``*_message`` function is pure (no broker), so each line is tested without one.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka.conn import create_conn
from aiokafka.errors import (
    AuthenticationFailedError,
    IllegalSaslStateError,
    IncompatibleBrokerVersion,
    KafkaError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
    for_code,
)
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import Array, Boolean, Int16, Int32, Schema, String

from configs import KafkaSettings, TopicSettings

UNKNOWN_TOPIC_OR_PARTITION = 3
TOPIC_AUTHORIZATION_FAILED = 29
CLUSTER_AUTHORIZATION_FAILED = 31
TOPIC_ALREADY_EXISTS = 36
#: A topic's authorized operations when the broker did not say (not asked, or a broker that does not tell).
OPERATIONS_UNKNOWN = -(2**31)
#: Kafka's AclOperation codes: bit n of authorized operations is operation n.
OPERATION_BITS = {"Read": 3, "Write": 4, "Create": 5, "Delete": 6, "Alter": 7, "Describe": 8,
                  "DescribeConfigs": 10, "AlterConfigs": 11}  # fmt: skip
#: How long the probe of the brokers may take (TLS handshakes and logins), at most.
PROBE_TIMEOUT_S = 10.0
#: OpenSSL's verify results that say the certificate does not name the host, and that it is outside its dates.
_NAME_MISMATCH = {62, 64}  # X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH
_EXPIRED = {10: "has expired", 9: "is not valid yet"}  # X509_V_ERR_CERT_HAS_EXPIRED, _CERT_NOT_YET_VALID


def principal(kafka: KafkaSettings) -> str:
    """The principal the brokers' ACLs see for these settings (as ``kafka-acls.sh --allow-principal`` takes it)."""
    if kafka.sasl_mechanism is not None and kafka.sasl_username:
        return f"User:{kafka.sasl_username}"
    if kafka.ssl_cert_file is not None:
        return f"the principal of the client certificate {kafka.ssl_cert_file}"
    return "User:ANONYMOUS"


def _quoted(names: Iterable[str]) -> str:
    return ", ".join(repr(name) for name in names)


def _topics(names: Sequence[str]) -> str:
    return f"topic {names[0]!r}" if len(names) == 1 else f"topics {_quoted(names)}"


# -- a connection refused ------------------------------------------------------------------------------------


def login_failed_message(kafka: KafkaSettings, server: str) -> str:
    """The broker at ``server`` refused the SASL credentials."""
    return (
        f"kafka error: authentication failed at {server} (SASL {kafka.sasl_mechanism} as {kafka.sasl_username!r}): "
        f"check kafka.sasl_username and the password in ${kafka.sasl_password_env}"
    )


def tls_failed_message(kafka: KafkaSettings, server: str, error: ssl.SSLCertVerificationError) -> str:
    """The broker's certificate did not verify: not signed by the CA the client trusts, another name, expired."""
    reason = error.verify_message or str(error)
    code = error.verify_code
    start = f"kafka error: TLS handshake with {server} failed"
    if code in _NAME_MISMATCH:
        host = server.rpartition(":")[0]
        return (
            f"{start}: the broker's certificate does not name {host} ({reason}); list the brokers in "
            "kafka.bootstrap_servers by a name their certificates hold (kafka.ssl_check_hostname: false "
            "turns the check off)"
        )
    if code in _EXPIRED:
        return f"{start}: the broker's certificate {_EXPIRED[code]}; renew the brokers' certificates (or check the clock)"
    trusted = (f"kafka.ssl_ca_file {kafka.ssl_ca_file}" if kafka.ssl_ca_file
               else "the system CAs (kafka.ssl_ca_file is not set)")  # fmt: skip
    return (
        f"{start}: certificate not trusted ({reason}) by {trusted}; set kafka.ssl_ca_file to the CA that "
        "signed the brokers' certificates"
    )


def connect_failure(kafka: KafkaSettings, server: str, error: BaseException) -> tuple[str, bool]:
    """(what went wrong connecting to ``server``, whether retrying cannot help).

    A refused login, an untrusted certificate or a SASL mechanism the listener does not enable stay so:
    the message is a whole error line. Anything else (refused, reset, timed out) may pass while a broker
    starts: the message is a short reason for the line said once the wait for Kafka gives up.
    """
    if isinstance(error, SaslAuthenticationFailed | AuthenticationFailedError):
        return login_failed_message(kafka, server), True
    if isinstance(error, UnsupportedSaslMechanismError | IllegalSaslStateError):
        return (
            f"kafka error: SASL {kafka.sasl_mechanism} refused at {server} ({error}); set kafka.sasl_mechanism "
            "to a mechanism the brokers' listener enables", True,
        )  # fmt: skip
    if isinstance(error, ssl.SSLCertVerificationError):
        return tls_failed_message(kafka, server, error), True
    if isinstance(error, ssl.SSLError):
        return f"{server}: TLS handshake failed ({error.reason or error})", False
    if isinstance(error, ConnectionRefusedError):
        return f"{server}: connection refused", False
    if isinstance(error, TimeoutError):
        return f"{server}: no answer in time", False
    return f"{server}: {type(error).__name__}: {error}", False


async def probe_connection(
    kafka: KafkaSettings, servers: Sequence[str], options: Mapping[str, Any], timeout_s: float = PROBE_TIMEOUT_S
) -> tuple[str | None, list[str]]:
    """Connect to each of ``servers`` as an aiokafka client with ``options`` does (TLS, SASL login, version
    lookup), within ``timeout_s`` in all; (the first error line that retrying cannot mend, the reasons of the
    other failures). (None, []) once one server accepts: whatever failed was not the connection."""
    reasons: list[str] = []
    deadline = asyncio.get_running_loop().time() + timeout_s
    for server in servers:
        host, _, port = server.rpartition(":")
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0:
            reasons.append(f"{server}: not tried (no time left)")
            continue
        try:
            connection = await asyncio.wait_for(create_conn(
                host, int(port), client_id=options.get("client_id", "aiokafka"),
                request_timeout_ms=options.get("request_timeout_ms", 30_000),
                ssl_context=options.get("ssl_context"), security_protocol=options.get("security_protocol", "PLAINTEXT"),
                sasl_mechanism=options.get("sasl_mechanism"), sasl_plain_username=options.get("sasl_plain_username"),
                sasl_plain_password=options.get("sasl_plain_password"),
            ), left)  # fmt: skip
        except (OSError, KafkaError, TimeoutError) as exc:
            message, fatal = connect_failure(kafka, server, exc)
            if fatal:
                return message, reasons
            reasons.append(message)
            continue
        connection.close()
        return None, []
    return None, reasons


def unreachable_message(servers: str, timeout_s: float, reasons: Sequence[str], last: BaseException | None) -> str:
    """No broker answered within the wait (nothing said it never will)."""
    why = "; ".join(reasons) if reasons else repr(last)
    return (
        f"Kafka at {servers} did not answer within {timeout_s:.0f}s ({why}); "
        "check kafka.bootstrap_servers and kafka.security_protocol"
    )


# -- topics: who may do what ----------------------------------------------------------------------------------


class _MetadataResponseV8(Response):  # type: ignore[misc]  # aiokafka is untyped
    API_KEY = 3
    API_VERSION = 8
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("brokers", Array(("node_id", Int32), ("host", String("utf-8")), ("port", Int32), ("rack", String("utf-8")))),
        ("cluster_id", String("utf-8")),
        ("controller_id", Int32),
        ("topics", Array(
            ("error_code", Int16), ("topic", String("utf-8")), ("is_internal", Boolean),
            ("partitions", Array(
                ("error_code", Int16), ("partition", Int32), ("leader", Int32), ("leader_epoch", Int32),
                ("replicas", Array(Int32)), ("isr", Array(Int32)), ("offline_replicas", Array(Int32)),
            )),
            ("topic_authorized_operations", Int32),
        )),
        ("cluster_authorized_operations", Int32),
    )  # fmt: skip


class _MetadataRequestV8(RequestStruct):  # type: ignore[misc]
    API_KEY = 3
    API_VERSION = 8
    RESPONSE_TYPE = _MetadataResponseV8
    SCHEMA = Schema(
        ("topics", Array(String("utf-8"))),
        ("allow_auto_topic_creation", Boolean),
        ("include_cluster_authorized_operations", Boolean),
        ("include_topic_authorized_operations", Boolean),
    )


class TopicAccessRequest(Request[_MetadataRequestV8]):  # type: ignore[misc]
    """Metadata of the named topics with what the principal may do on each (never creates one)."""

    API_KEY = 3

    def __init__(self, topics: list[str]) -> None:
        self.topics = topics

    def build(self, request_struct_class: type[_MetadataRequestV8]) -> _MetadataRequestV8:
        return request_struct_class(self.topics, False, False, True)


@dataclass(frozen=True)
class TopicAccess:
    """One topic as the principal sees it: the metadata error (0, 3: does not exist, 29: may not describe it)
    and the operations it may perform (None: the broker did not say)."""

    name: str
    error: int
    operations: frozenset[str] | None

    @classmethod
    def from_answer(cls, name: str, error: int, bits: int) -> TopicAccess:
        if bits == OPERATIONS_UNKNOWN:
            return cls(name, error, None)
        return cls(name, error, frozenset(op for op, bit in OPERATION_BITS.items() if bits >> bit & 1))

    @property
    def hidden(self) -> bool:
        """The principal may not even describe the topic (whether it exists is not said)."""
        return self.error == TOPIC_AUTHORIZATION_FAILED

    @property
    def missing(self) -> bool:
        return self.error == UNKNOWN_TOPIC_OR_PARTITION


async def describe_access(admin: Any, names: list[str]) -> dict[str, TopicAccess] | None:
    """Each topic's :class:`TopicAccess` from one broker of ``admin`` (a started AIOKafkaAdminClient); None
    when the brokers do not answer Metadata version 8 (nothing to learn then: the job goes on as before)."""
    try:
        answer = await admin._client.send(admin._client.get_random_node(), TopicAccessRequest(names))
    except (NotImplementedError, IncompatibleBrokerVersion):
        return None
    return {topic[1]: TopicAccess.from_answer(topic[1], topic[0], topic[-1]) for topic in answer.topics}


def denied_operations(
    access: Mapping[str, TopicAccess], needs: Mapping[str, Collection[str]]
) -> dict[str, list[str]]:
    """operation -> the topics (in ``needs`` order) where the principal may not perform it. Describe is needed
    everywhere (Read and Write imply it); a topic the principal may not describe lacks every needed operation.
    Topics whose operations the broker did not say are not judged.

    >>> access = {"tx": TopicAccess("tx", 0, frozenset({"Describe", "Write"})), "al": TopicAccess("al", 29, None)}
    >>> denied_operations(access, {"tx": ["Read"], "al": ["Write"]})
    {'Read': ['tx'], 'Write': ['al']}
    """
    denied: dict[str, list[str]] = {}
    for name, operations in needs.items():
        found = access.get(name)
        if found is None or (found.operations is None and not found.hidden):
            continue
        allowed = found.operations or frozenset()
        for operation in list(operations) or ["Describe"]:
            if operation not in allowed:
                denied.setdefault(operation, []).append(name)
    return denied


def access_denied_message(who: str, servers: str, denied: Mapping[str, Sequence[str]]) -> str:
    """``who`` may not perform the operations the job needs on these topics (operation -> topics).

    >>> access_denied_message("User:job", "k:9096", {"Read": ["tx"]})  # doctest: +NORMALIZE_WHITESPACE
    "kafka error: User:job is not authorized to Read topic 'tx' at k:9096; fix: grant it:
    kafka-acls.sh --add --allow-principal User:job --operation Read --topic tx"
    """
    clauses = " and to ".join(f"{operation} {_topics(names)}" for operation, names in denied.items())
    commands = "; ".join(
        f"kafka-acls.sh --add --allow-principal {who} --operation {operation} "
        + " ".join(f"--topic {name}" for name in names)
        for operation, names in denied.items()
    )
    return f"kafka error: {who} is not authorized to {clauses} at {servers}; fix: grant it: {commands}"


def create_command(topic: TopicSettings) -> str:
    """How an admin creates ``topic`` as the settings describe it.

    >>> create_command(TopicSettings(name="tx", partitions=24, replication_factor=3, configs={"min.insync.replicas": 2}))
    'kafka-topics.sh --create --topic tx --partitions 24 --replication-factor 3 --config min.insync.replicas=2'
    """
    configs = "".join(f" --config {key}={value}" for key, value in topic.kafka_configs().items())
    return (f"kafka-topics.sh --create --topic {topic.name} --partitions {topic.partitions} "
            f"--replication-factor {topic.replication_factor}{configs}")  # fmt: skip


def create_denied_message(who: str, servers: str, topics: Sequence[TopicSettings]) -> str:
    """The topics do not exist and ``who`` may not create them (no Create ACL)."""
    names = [t.name for t in topics]
    verb, them = ("does", "it") if len(names) == 1 else ("do", "them")
    return (
        f"kafka error: {_topics(names)} {verb} not exist at {servers} and {who} is not authorized to create {them}; "
        f"fix: create {them} as an admin ({'; '.join(create_command(t) for t in topics)}) or grant {who} Create "
        f"on {them} (kafka-acls.sh --add --allow-principal {who} --operation Create "
        + " ".join(f"--topic {name}" for name in names) + ")"
    )


def create_failed_message(servers: str, failures: Sequence[tuple[str, int, str | None]]) -> str:
    """The brokers refused to create topics for another reason than a missing ACL: (name, error code, message).

    >>> create_failed_message("k:9092", [("tx", 38, "Replication factor: 3 larger than available brokers: 1.")])
    "kafka error: could not create topic 'tx' at k:9092: InvalidReplicationFactorError (Replication factor: 3 \
larger than available brokers: 1.); check kafka.topics (partitions, replication_factor, configs)"
    """
    def why(code: int, text: str | None) -> str:
        return str(for_code(code).__name__) + (f" ({text})" if text else "")

    if len(failures) == 1:
        name, code, text = failures[0]
        what = f"topic {name!r} at {servers}: {why(code, text)}"
    else:
        what = f"topics at {servers}: " + ", ".join(f"{name!r}: {why(code, text)}" for name, code, text in failures)
    return f"kafka error: could not create {what}; check kafka.topics (partitions, replication_factor, configs)"


def configs_unreadable_notice(who: str, names: Sequence[str]) -> str:
    """Why the configs of existing topics are not compared with the settings (the job may not read them).

    >>> configs_unreadable_notice("User:job", ["tx", "al"])
    "notice: not comparing the configs of topics 'tx', 'al' with kafka.topics: User:job is not authorized to \
DescribeConfigs on them (grant it to have them checked at start)"
    """
    them = "it" if len(names) == 1 else "them"
    return (
        f"notice: not comparing the configs of {_topics(names)} with kafka.topics: {who} is not authorized "
        f"to DescribeConfigs on {them} (grant it to have {them} checked at start)"
    )


def compacted_message(servers: str, names: Sequence[str]) -> str:
    """Existing topics the job writes without a key are compacted: Kafka would refuse every record.

    >>> compacted_message("k:9092", ["terminal.risk"])
    "kafka error: topic 'terminal.risk' at k:9092 is compacted (cleanup.policy=compact), but the job writes it \
without keys, which Kafka refuses; make it a delete topic: kafka-configs.sh --bootstrap-server k:9092 --alter \
--entity-type topics --entity-name terminal.risk --add-config cleanup.policy=delete"
    """
    topics = ", ".join(repr(n) for n in names)
    fixes = "; ".join(f"kafka-configs.sh --bootstrap-server {servers.split(',')[0]} --alter --entity-type topics "
                      f"--entity-name {n} --add-config cleanup.policy=delete" for n in names)  # fmt: skip
    return (f"kafka error: topic{'s' if len(names) > 1 else ''} {topics} at {servers} "
            f"{'are' if len(names) > 1 else 'is'} compacted (cleanup.policy=compact), but the job writes "
            f"{'them' if len(names) > 1 else 'it'} without keys, which Kafka refuses; make it a delete topic: {fixes}")


#: How long the brokers may answer a producer-id request with a retriable error (coordinators loading).
PRODUCER_ID_WAIT_S = 60.0


async def producer_ids_refused(admin: Any) -> str | None:
    """Why the brokers of ``admin`` (a started AIOKafkaAdminClient) give no producer ids, None when they do.

    An idempotent or transactional producer starts by asking for one (InitProducerId); a broker without
    them (the embedded one answers UNKNOWN_SERVER_ERROR) would leave aiokafka's sender failing for ever.
    """
    from aiokafka.protocol.transaction import InitProducerIdRequest

    deadline = asyncio.get_running_loop().time() + PRODUCER_ID_WAIT_S
    while True:
        try:
            answer = await admin._client.send(admin._client.get_random_node(), InitProducerIdRequest(None, 60_000))
        except (NotImplementedError, IncompatibleBrokerVersion) as exc:
            return f"InitProducerId not supported ({type(exc).__name__})"
        error = for_code(answer.error_code)
        if not answer.error_code:
            return None
        # a new cluster loads its coordinators first (COORDINATOR_LOAD_IN_PROGRESS): ask again
        if not error.retriable or asyncio.get_running_loop().time() > deadline:
            return f"InitProducerId answered {error.__name__}"
        await asyncio.sleep(0.5)
