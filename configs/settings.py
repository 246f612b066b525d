"""Typed settings parsed from YAML and validated before anything starts.

Every section is a frozen ``msgspec.Struct`` that forbids unknown keys. A bad
file stops start-up with one line naming the key and what is allowed:

>>> settings_from_dict({"kafka": {"security_protocol": "TLS"}})
Traceback (most recent call last):
...
configs.settings.ConfigError: config error: kafka.security_protocol: Invalid enum value 'TLS' (allowed: 'PLAINTEXT', 'SSL', 'SASL_SSL')

Secrets never live in the YAML: the file names the environment variable that
holds them (``kafka.sasl_password_env``, ``mlflow.token_env``).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import math
import os
import re
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, TypeAlias

import msgspec
import yaml

PositiveInt: TypeAlias = Annotated[int, msgspec.Meta(gt=0)]
NonNegativeInt: TypeAlias = Annotated[int, msgspec.Meta(ge=0)]
Fraction: TypeAlias = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
Port: TypeAlias = Annotated[int, msgspec.Meta(ge=0, le=65535)]
TopicName: TypeAlias = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9._-]{1,249}$")]

SCENARIOS = ("card_testing", "account_takeover", "impossible_travel", "compromised_terminal", "bust_out")

#: Keys people put in YAML by habit that must come from the environment instead.
_SECRET_KEYS = {"sasl_password": "kafka.sasl_password_env", "password": "kafka.sasl_password_env", "token": "mlflow.token_env"}


class ConfigError(ValueError):
    """A configuration that cannot start; the message is one line naming key and fix."""


class _Section(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


TopicConfigValue: TypeAlias = str | int | float | bool


class TopicSettings(_Section, frozen=True):
    """One Kafka topic and how to create it."""

    name: TopicName
    partitions: PositiveInt = 4
    replication_factor: PositiveInt = 1
    #: Kafka topic configs set when the job creates the topic (``cleanup.policy``, ``retention.ms``, ...);
    #: a topic that already exists keeps its own (the job warns when they differ).
    configs: dict[str, TopicConfigValue] = msgspec.field(default_factory=dict)

    def kafka_configs(self) -> dict[str, str]:
        """The configs as Kafka takes them: strings, booleans lower-case.

        >>> TopicSettings(name="t", configs={"cleanup.policy": "compact", "retention.ms": 3600000,
        ...                                   "unclean.leader.election.enable": False}).kafka_configs()
        {'cleanup.policy': 'compact', 'retention.ms': '3600000', 'unclean.leader.election.enable': 'false'}
        """
        return {key: str(value).lower() if isinstance(value, bool) else str(value) for key, value in self.configs.items()}


class TopicsSettings(_Section, frozen=True):
    """The topics the product uses: four public ones and the terminal stage's two."""

    transactions: TopicSettings = TopicSettings(name="transactions", partitions=4)
    labels: TopicSettings = TopicSettings(name="labels", partitions=4)
    alerts: TopicSettings = TopicSettings(name="alerts", partitions=4)
    dead_letters: TopicSettings = TopicSettings(name="transactions.dlq", partitions=1)
    #: Per-terminal updates from every scoring partition, routed by terminal (the keyed stage's input).
    terminal_deltas: TopicSettings = TopicSettings(name="terminal.deltas", partitions=4)
    #: The stage's per-terminal updates, read whole by every scoring actor at its start. Kept by time, never
    #: compacted: a record is a batch of changed terminals without a key, which Kafka refuses on a compacted
    #: topic; its ``retention.ms`` must cover the features' longest look-back (:meth:`Settings.__post_init__`).
    terminal_risk: TopicSettings = TopicSettings(name="terminal.risk", partitions=4)

    def all(self) -> list[TopicSettings]:
        return [self.transactions, self.labels, self.alerts, self.dead_letters, self.terminal_deltas, self.terminal_risk]

    def __post_init__(self) -> None:
        names = [t.name for t in self.all()]
        if len(set(names)) != len(names):
            raise ValueError(f"topic names must differ, got {names}")
        if self.labels.partitions != self.transactions.partitions:
            raise ValueError(
                "labels.partitions must equal transactions.partitions "
                f"({self.labels.partitions} != {self.transactions.partitions}): "
                "a label must land on the partition that scored its transaction"
            )
        if self.terminal_risk.partitions != self.terminal_deltas.partitions:
            raise ValueError(
                "terminal_risk.partitions must equal terminal_deltas.partitions "
                f"({self.terminal_risk.partitions} != {self.terminal_deltas.partitions}): "
                "each stage partition publishes to the risk partition of the same number"
            )
        for key, topic in self.keyless().items():
            if "compact" in str(topic.configs.get("cleanup.policy", "")):
                raise ValueError(
                    f"{key}.configs.cleanup.policy: compact is not possible, the job writes this topic's records "
                    "without a key and Kafka refuses keyless records on a compacted topic; use delete (the default)"
                )

    def keyless(self) -> dict[str, TopicSettings]:
        """The topics the job writes without a key (by settings key): dead letters and the terminal stage's
        two, routed by partition number. None may be compacted."""
        return {"dead_letters": self.dead_letters, "terminal_deltas": self.terminal_deltas,
                "terminal_risk": self.terminal_risk}  # fmt: skip


class KafkaSettings(_Section, frozen=True):
    """How to reach Kafka: the embedded broker locally, a real cluster in production."""

    #: Start the bundled Kafka-compatible broker on loopback (local runs and tests).
    embedded: bool = False
    #: Port for the embedded broker; 0 picks a free one.
    embedded_port: Port = 0
    bootstrap_servers: tuple[Annotated[str, msgspec.Meta(pattern=r"^[^\s:]+:\d{1,5}$")], ...] = ("127.0.0.1:9092",)
    client_id: str = "fraudstream"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_SSL"] = "PLAINTEXT"
    #: CA bundle that signed the brokers' certificates (SSL, SASL_SSL); system CAs when unset.
    ssl_ca_file: str | None = None
    #: Client certificate and key for mutual TLS.
    ssl_cert_file: str | None = None
    ssl_key_file: str | None = None
    ssl_check_hostname: bool = True
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    #: Name of the environment variable holding the SASL password.
    sasl_password_env: str = "FRAUDSTREAM_KAFKA_SASL_PASSWORD"
    request_timeout_ms: PositiveInt = 30_000
    #: Exactly-once alerts: each actor writes a micro-batch's outputs and its input offsets in one Kafka
    #: transaction (consumers of ``alerts`` read with isolation.level=read_committed). Off: at-least-once,
    #: a re-sent alert keeps its ``alert_id``. The embedded broker has no transactions.
    exactly_once: bool = False
    topics: TopicsSettings = TopicsSettings()

    def __post_init__(self) -> None:
        if not self.bootstrap_servers and not self.embedded:
            raise ValueError("bootstrap_servers: give at least one host:port (or set embedded: true)")
        if self.security_protocol == "SASL_SSL" and (self.sasl_mechanism is None or not self.sasl_username):
            raise ValueError("sasl_mechanism and sasl_username are required when security_protocol is SASL_SSL")
        if self.security_protocol == "PLAINTEXT" and (self.sasl_mechanism or self.ssl_ca_file):
            raise ValueError("security_protocol is PLAINTEXT but TLS/SASL settings are given: use SSL or SASL_SSL")
        if (self.ssl_cert_file is None) != (self.ssl_key_file is None):
            raise ValueError("ssl_cert_file and ssl_key_file go together (mutual TLS)")
        if self.embedded and self.security_protocol != "PLAINTEXT":
            raise ValueError("the embedded broker speaks PLAINTEXT only: set security_protocol: PLAINTEXT")
        if self.embedded and self.exactly_once:
            raise ValueError("exactly_once: the embedded broker has no transactions; set exactly_once: false, "
                             "or embedded: false with the bootstrap_servers of a Kafka cluster")
        for key in ("ssl_ca_file", "ssl_cert_file", "ssl_key_file"):
            path = getattr(self, key)
            if path is not None and not Path(path).is_file():
                raise ValueError(
                    f"{key}: file {path!r} does not exist (a relative path starts at the working directory: "
                    "in a Ray job, the uploaded project on every node)"
                )

    def sasl_password(self) -> str | None:
        """The SASL password from the environment (never from YAML)."""
        if self.sasl_mechanism is None:
            return None
        value = os.environ.get(self.sasl_password_env)
        if not value:
            raise ConfigError(
                f"config error: kafka.sasl_password_env: environment variable {self.sasl_password_env} "
                "is not set; export the SASL password there"
            )
        return value


class ProducerSettings(_Section, frozen=True):
    """How `fraudstream produce` writes to Kafka."""

    #: Target transactions per second; 0 means as fast as possible.
    rate: Annotated[float, msgspec.Meta(ge=0.0)] = 0.0
    #: How long a send waits to share its batch. Every batch is one entry in the
    #: partition's log, and the embedded broker lists a partition's entries on every
    #: fetch: at 2,000 events/s into 4 partitions, 5 ms batches make its fetch latency
    #: alone pass 100 ms (p99) within 15 s, 25 ms batches keep it near 35 ms
    #: (`bench/broker_latency.py`). The record's timestamp is taken at the send, so
    #: the wait is part of every measured latency.
    linger_ms: NonNegativeInt = 25
    max_batch_size: PositiveInt = 262_144
    compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "lz4"
    acks: Literal["all", "1", "0"] = "all"
    #: Sends in flight before waiting for acknowledgements (bounds memory).
    max_in_flight: PositiveInt = 20_000


class GeneratorSettings(_Section, frozen=True):
    """The synthetic card-payment world of `fraudstream generate`."""

    accounts: PositiveInt = 10_000
    days: Annotated[int, msgspec.Meta(gt=0, le=3650)] = 30
    seed: int = 7
    start: Annotated[dt.datetime, msgspec.Meta(tz=True)] = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    #: Target share of fraudulent transactions (0.1 % to 2 % is realistic).
    fraud_rate: Annotated[float, msgspec.Meta(gt=0.0, le=0.2)] = 0.006
    #: Relative share of fraudulent transactions by scenario.
    scenario_weights: dict[str, Annotated[float, msgspec.Meta(ge=0.0)]] = msgspec.field(
        default_factory=lambda: dict.fromkeys(SCENARIOS, 1.0)
    )
    #: Share of genuine transactions that also get a (delayed) "genuine" label.
    genuine_label_rate: Fraction = 0.1
    #: When labels arrive: "mixed" (a fraud report is a customer call within 1-12 h 30 % of the time, else a
    #: chargeback in 2-45 days; genuine labels 1-30 days), "fixed" (every label exactly label_delay_days after
    #: its transaction) or "chargeback" (every report, fraud or genuine, 2-60 days later, median ~12 days).
    label_delay: Literal["mixed", "fixed", "chargeback"] = "mixed"
    #: Days from a transaction to its label with label_delay "fixed".
    label_delay_days: Annotated[float, msgspec.Meta(gt=0.0, le=365.0)] = 7.0
    #: Share of events delivered out of order, by up to max_disorder_s seconds.
    out_of_order_rate: Fraction = 0.0
    max_disorder_s: Annotated[float, msgspec.Meta(gt=0.0)] = 60.0
    #: Share of events delivered very late (max_disorder_s .. max_late_s behind).
    late_rate: Fraction = 0.0
    max_late_s: Annotated[float, msgspec.Meta(gt=0.0)] = 6 * 3600.0

    def __post_init__(self) -> None:
        unknown = sorted(set(self.scenario_weights) - set(SCENARIOS))
        if unknown:
            raise ValueError(f"scenario_weights: unknown scenario {unknown[0]!r} (allowed: {', '.join(SCENARIOS)})")
        if not any(self.scenario_weights.values()):
            raise ValueError("scenario_weights: at least one scenario needs a weight above 0")
        if self.late_rate and self.max_late_s <= self.max_disorder_s:
            raise ValueError("max_late_s must exceed max_disorder_s")


class FeatureSettings(_Section, frozen=True):
    """Per-entity streaming features in event time (see features/)."""

    #: Sliding event-time windows for count/sum/mean of amount, in seconds.
    windows_s: tuple[PositiveInt, ...] = (600, 3600, 86_400, 7 * 86_400, 30 * 86_400)
    #: Events up to this far behind a partition's max event time still update windows.
    allowed_lateness_s: NonNegativeInt = 300
    #: Weight of the newest amount in the exponentially weighted mean.
    ewma_alpha: Annotated[float, msgspec.Meta(gt=0.0, le=1.0)] = 0.1
    #: Accounts with no event for this long (event time, behind the watermark) are dropped.
    entity_ttl_days: Annotated[float, msgspec.Meta(gt=0.0)] = 90.0
    #: Bound on remembered events per account (oldest dropped first, and counted).
    max_events_per_account: PositiveInt = 2_000
    #: Bits of the per-account novelty filter (merchants, countries, devices seen).
    novelty_bits: Annotated[int, msgspec.Meta(ge=64, le=65_536, multiple_of=64)] = 1_024
    #: Located transactions remembered for distance and speed.
    location_trail: Annotated[int, msgspec.Meta(ge=1, le=64)] = 4
    #: Terminal risk: window, bucket width, and how stale the shared table may be.
    terminal_window_days: Annotated[float, msgspec.Meta(gt=0.0)] = 7.0
    terminal_bucket_s: PositiveInt = 3_600
    terminal_freshness_s: NonNegativeInt = 60
    #: Short window of ``terminal_recent_frauds``: frauds paid at the terminal this recently (an episode under way;
    #: one bucket at least, the terminal window at most).
    terminal_recent_s: PositiveInt = 86_400
    #: Account known frauds: window of ``account_known_frauds_<N>d`` (this account's frauds paid in the last N days
    #: whose label had arrived) and cap of ``account_days_since_fraud`` (its value when none is known).
    account_fraud_window_days: Annotated[float, msgspec.Meta(gt=0.0, le=366.0)] = 30.0
    #: Delay-aware entity risk (Le Borgne et al., ch. 3): for each of these entities of a transaction, its
    #: transactions and known-fraud ratio over the last N complete days (``entity_windows_days``) ending
    #: ``label_delay_days`` before the event, the span whose labels are in. Empty: none. Each kind's table is
    #: shared by every scoring actor (the keyed stage and the broadcast table): devices cost one entry per device.
    entity_kinds: tuple[Literal["terminal", "merchant", "device"], ...] = ("terminal", "merchant", "device")
    entity_windows_days: tuple[Annotated[int, msgspec.Meta(ge=1, le=366)], ...] = (1, 7, 30)
    #: How long after a transaction its label is expected (set it to the data's label delay, like
    #: ``history.label_delay_days``): the delay-aware windows end this long before the event.
    label_delay_days: Annotated[float, msgspec.Meta(ge=0.0, le=365.0)] = 7.0
    #: Scored transactions awaiting their label (bounded by count and event-time age).
    pending_labels_max: PositiveInt = 1_000_000
    pending_labels_ttl_days: Annotated[float, msgspec.Meta(gt=0.0)] = 60.0
    #: Hours (UTC, start inclusive, end exclusive) that count as night.
    night_hours: tuple[Annotated[int, msgspec.Meta(ge=0, le=24)], Annotated[int, msgspec.Meta(ge=0, le=24)]] = (0, 6)
    #: Idle-entity sweeps run each time the watermark crosses a multiple of this (event time).
    sweep_interval_s: PositiveInt = 86_400

    def __post_init__(self) -> None:
        if not self.windows_s:
            raise ValueError("windows_s: give at least one window")
        if list(self.windows_s) != sorted(set(self.windows_s)):
            raise ValueError(f"windows_s: windows must be distinct and ascending, got {list(self.windows_s)}")
        if self.terminal_bucket_s > self.terminal_window_days * 86_400:
            raise ValueError("terminal_bucket_s must not exceed the terminal window")
        if list(self.entity_windows_days) != sorted(set(self.entity_windows_days)):
            raise ValueError(
                f"entity_windows_days: windows must be distinct and ascending, got {list(self.entity_windows_days)}"
            )
        repeated = sorted({kind for kind in self.entity_kinds if self.entity_kinds.count(kind) > 1})
        if repeated:
            raise ValueError(f"entity_kinds: {', '.join(repeated)} listed more than once; list each kind once")
        if self.entity_kinds and not self.entity_windows_days:
            raise ValueError("entity_windows_days: give at least one window, or set entity_kinds: []")


class MlflowSettings(_Section, frozen=True):
    """Where models are tracked and registered."""

    tracking_uri: str = "sqlite:///mlruns/mlflow.db"
    #: Name of the environment variable holding the tracking server token.
    token_env: str = "MLFLOW_TRACKING_TOKEN"


#: Our names for the fields a Parquet history can hold (keys of ``history.columns``).
HISTORY_FIELDS = (
    "transaction_id", "account_id", "event_time", "amount", "currency", "merchant_id", "merchant_category",
    "terminal_id", "device_id", "country", "lat", "lon", "channel", "is_fraud", "fraud_scenario", "label",
    "label_time",
)  # fmt: skip


class HistorySettings(_Section, frozen=True):
    """How `train` and `backtest` read a Parquet history (a file or a directory of files) and its labels.

    ``columns`` maps our field names to the history's column names, for columns
    named differently (``{account_id: card_id, event_time: ts}``); unmapped
    fields are looked for under our name. Only ``transaction_id``,
    ``account_id``, ``event_time`` and ``amount`` are required: an absent
    optional field makes the features that need it neutral. Integer ids become
    strings; times may be timestamps, ISO 8601 strings or epoch numbers (in
    ``epoch_unit``). A ``label`` column (fraud/genuine, true/false or 1/0) stands
    in for a labels file.
    """

    #: Our field name -> the history's column name.
    columns: dict[str, Annotated[str, msgspec.Meta(min_length=1)]] = msgspec.field(default_factory=dict)
    #: Unit of time columns given as epoch numbers: s, ms, us or ns.
    epoch_unit: Literal["s", "ms", "us", "ns"] = "ms"
    #: Labels from a label column become known this long after their transaction. Also the gap
    #: `train` leaves between its train and test periods (labels of the last training days must arrive).
    label_delay_days: Annotated[float, msgspec.Meta(ge=0.0, le=365.0)] = 7.0

    def __post_init__(self) -> None:
        unknown = sorted(set(self.columns) - set(HISTORY_FIELDS))
        if unknown:
            raise ValueError(
                f"columns: unknown field {unknown[0]!r} (map one of: {', '.join(HISTORY_FIELDS)} "
                "to the name of your column)"
            )
        targets = list(self.columns.values())
        repeated = sorted({name for name in targets if targets.count(name) > 1})
        if repeated:
            raise ValueError(f"columns: column {repeated[0]!r} is mapped to more than one field; map each column once")


class TrainingSettings(_Section, frozen=True):
    """`fraudstream train`: the batch classifier, its time split, and where it is registered.

    The history's span is cut in event time into a train period, a gap of
    ``history.label_delay_days`` (so the labels of the last training days have
    arrived when the model goes live) and a test period. The latest
    ``calibration_fraction`` of the train period calibrates the probabilities.
    With ``refit`` the version registered is the same recipe fitted again on
    the latest labelled data (the test metrics measure the recipe).
    """

    #: MLflow experiment the training runs go to.
    experiment: Annotated[str, msgspec.Meta(min_length=1)] = "fraudstream"
    #: Registered model every training run adds a version to.
    registered_model: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9._-]{1,128}$")] = "fraud-classifier"
    #: Features the classifier sees ([] = every registered feature).
    features: tuple[str, ...] = ()
    #: Share of the span (gap excluded) in the train period; the rest after the gap is the test period.
    train_fraction: Annotated[float, msgspec.Meta(gt=0.0, lt=1.0)] = 0.7
    #: Latest share of the train period kept out of fitting to calibrate on.
    calibration_fraction: Annotated[float, msgspec.Meta(gt=0.0, lt=1.0)] = 0.25
    calibration: Literal["isotonic", "sigmoid"] = "isotonic"
    #: "balanced" weighs the rare frauds up to the weight of all genuine rows.
    class_weight: Literal["balanced", "none"] = "balanced"
    #: scikit-learn HistGradientBoostingClassifier parameters.
    max_iter: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 200
    learning_rate: Annotated[float, msgspec.Meta(gt=0.0, le=1.0)] = 0.1
    max_leaf_nodes: Annotated[int, msgspec.Meta(ge=2, le=4096)] = 15
    min_samples_leaf: PositiveInt = 100
    l2_regularization: Annotated[float, msgspec.Meta(ge=0.0)] = 0.0
    seed: int = 0
    #: Register the recipe refitted on the whole span up to ``history.label_delay_days`` before its end (labels
    #: known at its end, the latest ``calibration_fraction`` calibrating), not the model fitted for the test period.
    refit: bool = True
    #: Fit the score fusion registered with the version (``scoring.fusion.method: learned``): logistic stacking of
    #: the sources' log-odds on the test period's scores (labels known at the span's end), kept only where it ranks
    #: at least as well as the best single source on the period's later half; else that source alone.
    learn_fusion: bool = True

    def __post_init__(self) -> None:
        repeated = sorted({name for name in self.features if self.features.count(name) > 1})
        if repeated:
            raise ValueError(f"features: {', '.join(repeated)} listed more than once; list each feature once")


class EvaluationSettings(_Section, frozen=True):
    """How `train` and `backtest` measure: the daily alert budget of the investigators."""

    #: k of precision@k and card precision@k: transactions / accounts checked per day.
    top_k: PositiveInt = 100


class BacktestSettings(_Section, frozen=True):
    """`fraudstream backtest`: a history replayed through the scoring code in event time."""

    #: Rows per micro-batch a partition's scorer gets (a partition's share of stream.max_batch_records).
    micro_batch_records: PositiveInt = 500


class RuleSettings(_Section, frozen=True):
    """One decision rule: a condition over feature names and what it decides.

    ``when`` is a small expression language: comparisons of a feature name with
    a number (``<  <=  >  >=  ==  !=``) joined by ``and`` / ``or`` / ``not`` and
    parentheses, e.g. ``speed_kmh > 900 and distance_km > 300``.
    """

    name: Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
    when: Annotated[str, msgspec.Meta(min_length=1)]
    action: Literal["review", "block"] = "review"
    #: Fused score given to an event when the rule matches (the score is the max).
    score: Fraction = 0.9


def review_score_problem(rule: RuleSettings, block_threshold: float) -> str | None:
    """Why ``rule`` cannot keep its score, else None: a review rule scoring at or above ``block_threshold``
    would block its matches (the message shared by ``scoring.rules``, a rules file and the rule compiler).

    >>> review_score_problem(RuleSettings(name="a", when="amount > 1", score=0.9999), block_threshold=0.9995)
    "review rule 'a' has score 0.9999 >= block_threshold 0.9995, so its matches would be blocked; lower its score or set action: block"
    """
    if rule.action == "review" and rule.score >= block_threshold:
        return (
            f"review rule {rule.name!r} has score {rule.score} >= block_threshold {block_threshold}, "
            "so its matches would be blocked; lower its score or set action: block"
        )
    return None


class AnomalySettings(_Section, frozen=True):
    """The online (River) anomaly model every event is scored and learned with."""

    #: River HalfSpaceTrees parameters (the trees' splits are drawn from the seed).
    n_trees: Annotated[int, msgspec.Meta(ge=1, le=256)] = 25
    height: Annotated[int, msgspec.Meta(ge=1, le=16)] = 8
    window_size: PositiveInt = 250
    seed: int = 1
    #: Feature names the model sees (empty = every registered feature). The default
    #: leaves out slow-moving totals, time of day and terminal volumes, which make
    #: busy genuine accounts look unusual (measured in docs/architecture.md, Scoring).
    features: tuple[str, ...] = (
        "amount", "count_10m", "count_1h", "count_24h", "mean_10m", "mean_24h", "amount_ratio",
        "seconds_since_prev", "speed_kmh", "new_merchant", "new_country", "new_device",
        "distinct_merchants_24h", "distinct_countries_24h", "terminal_fraud_rate",
    )  # fmt: skip

    def __post_init__(self) -> None:
        repeated = sorted({name for name in self.features if self.features.count(name) > 1})
        if repeated:
            raise ValueError(f"features: {', '.join(repeated)} listed more than once; list each feature once")


class ClassifierSettings(_Section, frozen=True):
    """The batch classifier (a registered MLflow model) as a score source.

    Fusion weighting: its calibrated fraud probability ``p`` enters the fused
    score through a piecewise-linear map that sends ``review_probability`` to
    ``review_threshold`` and ``block_probability`` to ``block_threshold`` (0 to 0,
    1 to 1), so ``p >= review_probability`` raises a review and ``p >=
    block_probability`` a block, whatever the other sources say.
    """

    #: models:/NAME@ALIAS or models:/NAME/VERSION; "" = no batch classifier.
    #: The backtest skips it (with a note) while the alias is not set.
    model_uri: str = "models:/fraud-classifier@champion"
    review_probability: Fraction = 0.5
    block_probability: Fraction = 0.9
    #: Alias of the same registered model scored in shadow (recorded on alerts and in
    #: metrics, never deciding); "" = none. Only with a model_uri given by alias.
    challenger_alias: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]*$")] = "challenger"
    #: How often scoring actors ask the registry whether an alias moved (seconds).
    poll_interval_s: Annotated[float, msgspec.Meta(gt=0.0)] = 10.0
    #: The stream job when model_uri names no version yet (the model is not registered or
    #: the alias not set): "error" stops start-up with the command to run; "wait" scores
    #: without the classifier and starts serving it as soon as the alias is set.
    when_missing: Literal["error", "wait"] = "error"

    def __post_init__(self) -> None:
        if self.model_uri and not self.model_uri.startswith("models:/"):
            raise ValueError(
                f"model_uri: expected models:/NAME@ALIAS or models:/NAME/VERSION (or '' for none), got {self.model_uri!r}"
            )
        if not 0.0 < self.review_probability <= self.block_probability <= 1.0:
            raise ValueError("review_probability and block_probability: need 0 < review_probability <= block_probability <= 1")


class OnlineSettings(_Section, frozen=True):
    """The online classifier: a River logistic regression learned from the delayed labels (models/online.py).

    Every scored transaction's input vector waits in a bounded buffer for its
    label; a label arriving within the bounds teaches the model that vector.
    Its fraud probability enters the fused score like the batch classifier's
    (``review_probability`` -> ``review_threshold``, ``block_probability`` ->
    ``block_threshold``), once the warm-up is over.
    """

    enabled: bool = True
    #: Feature names the model sees (empty = every registered feature); signed log1p, then standardised.
    features: tuple[str, ...] = (
        "amount", "count_10m", "count_1h", "count_24h", "mean_10m", "mean_24h", "amount_ratio",
        "seconds_since_prev", "speed_kmh", "new_merchant", "new_country", "new_device",
        "distinct_merchants_24h", "distinct_countries_24h", "terminal_fraud_rate",
    )  # fmt: skip
    #: Scored transactions whose input vectors wait for a label, per partition (the oldest are evicted
    #: first). Size it to the partition's transactions over the label delay: a label is learned only
    #: while its transaction is among the last ``buffer_max`` scored.
    buffer_max: PositiveInt = 200_000
    #: Labels of transactions older than this (event time) are not learned; their vectors are dropped.
    buffer_ttl_days: Annotated[float, msgspec.Meta(gt=0.0)] = 45.0
    #: River SGD step for the weights and the intercept (0.05 and more ranked worse: docs/architecture.md).
    learning_rate: Annotated[float, msgspec.Meta(gt=0.0, le=10.0)] = 0.01
    #: Sample weight of a fraud label (a genuine one weighs 1). Raise it when genuine labels far
    #: outnumber fraud labels; the bundled generator labels every fraud and 10 % of genuine payments,
    #: a label stream already rich in fraud, where 1 ranked best (2, 3 and 10 worse).
    fraud_weight: Annotated[float, msgspec.Meta(gt=0.0, le=10_000.0)] = 1.0
    #: Warm-up: the score stays 0 (no alerts) until this many fraud labels were learned (per partition).
    min_fraud_labels: NonNegativeInt = 50
    #: Fraud probability mapped to review_threshold (reviews from here) and to block_threshold (blocks from here).
    #: How often the running job logs every partition's online model to MLflow as a new version of
    #: ``registered_model`` (and once when it stops); 0 = never.
    snapshot_interval_s: Annotated[float, msgspec.Meta(ge=0.0)] = 600.0
    registered_model: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9._-]{1,128}$")] = "fraud-online"
    review_probability: Fraction = 0.95
    block_probability: Fraction = 0.99

    def __post_init__(self) -> None:
        repeated = sorted({name for name in self.features if self.features.count(name) > 1})
        if repeated:
            raise ValueError(f"features: {', '.join(repeated)} listed more than once; list each feature once")
        if not 0.0 < self.review_probability <= self.block_probability <= 1.0:
            raise ValueError(
                "review_probability and block_probability: need 0 < review_probability <= block_probability <= 1"
            )


#: Score sources the fusion combines (``models``: AnomalySource, OnlineClassifierSource, ClassifierSource).
#: Rules are not fused: a matched rule lifts the fused score to at least its ``score`` after fusion.
FUSED_SOURCES = ("anomaly", "online", "classifier")


def _check_sources(key: str, values: dict[str, float], sources: tuple[str, ...] = FUSED_SOURCES) -> None:
    unknown = sorted(set(values) - set(sources))
    if unknown:
        hint = "; rules are not fused (a matched rule lifts the fused score)" if "rules" in unknown else ""
        raise ValueError(f"{key}: unknown source {unknown[0]!r} (sources: {', '.join(sources)}){hint}")
    bad = sorted(name for name, value in values.items() if not math.isfinite(value))
    if bad:
        raise ValueError(f"{key}: {bad[0]} is {values[bad[0]]}; give a finite number")


class StackingSettings(_Section, frozen=True):
    """Logistic stacking: fused score = sigmoid(intercept + sum over sources of coefficient x input), where a
    source's input is its score in [0, 1] (``inputs: score``) or the score's log-odds (``inputs: logit``, what
    `fraudstream train` fits: one source with coefficient 1 and intercept 0 is then exactly that source)."""

    intercept: float = 0.0
    #: Source name -> coefficient on its input; a source not listed has coefficient 0. ``rules`` listed here is an
    #: input (its matched rule's score) instead of a floor; the learned fusion always treats it so.
    coefficients: dict[str, float] = msgspec.field(default_factory=dict)
    inputs: Literal["score", "logit"] = "score"

    def __post_init__(self) -> None:
        if not math.isfinite(self.intercept):
            raise ValueError(f"intercept: {self.intercept} is not a finite number")
        _check_sources("coefficients", self.coefficients, (*FUSED_SOURCES, "rules"))


class FusionSettings(_Section, frozen=True):
    """How the sources' scores become the fused score (models/fusion.py); rules and thresholds apply after.

    ``learned`` (default): the fusion `fraudstream train` fitted and registered
    with the served classifier version (it moves with the champion); ``max``
    until a classifier that carries one is served. ``max``: the highest source
    score. ``weighted``: the weighted mean of the sources' scores (``weights``;
    a source not listed weighs 1). ``stacking``: a logistic model over the
    sources' scores (``stacking``).
    """

    method: Literal["learned", "max", "weighted", "stacking"] = "learned"
    #: Source name -> weight (>= 0) for ``weighted``; a source not listed weighs 1, 0 leaves it out.
    weights: dict[str, Annotated[float, msgspec.Meta(ge=0.0)]] = msgspec.field(default_factory=dict)
    stacking: StackingSettings = StackingSettings()

    def __post_init__(self) -> None:
        _check_sources("weights", self.weights)
        if self.method == "stacking" and not self.stacking.coefficients:
            raise ValueError(
                "stacking.coefficients: method stacking needs a coefficient for at least one source "
                f"({', '.join(FUSED_SOURCES)}), e.g. {{anomaly: 6.0, classifier: 8.0}} with intercept: -9.0"
            )


class ScoringSettings(_Section, frozen=True):
    """Scoring and decisions: anomaly model, rules, thresholds, explanations."""

    anomaly: AnomalySettings = AnomalySettings()
    rules: tuple[RuleSettings, ...] = (
        RuleSettings(name="card_testing", when="count_10m >= 3 and mean_10m < 3", action="block", score=0.99),
        RuleSettings(
            name="impossible_travel",
            when="distinct_countries_24h >= 2 and seconds_since_prev < 5400 and new_merchant == 1 "
            "and terminal_tx_count > 0 and amount_ratio > 1",
            action="review",
            score=0.97,
        ),
        RuleSettings(
            name="account_takeover",
            when="distinct_countries_24h >= 2 and new_merchant == 1 and amount_ratio > 3",
            action="review",
            score=0.97,
        ),
        RuleSettings(
            name="bust_out",
            when="distinct_merchants_24h >= 6 and amount_ratio > 2.5 and new_merchant == 1 and amount > 200",
            action="review",
            score=0.97,
        ),
        RuleSettings(
            name="compromised_terminal",
            when="terminal_fraud_count >= 3 and terminal_fraud_rate >= 0.15",
            action="review",
            score=0.9,
        ),
    )
    #: Fused score at or above which an alert is raised with decision "review"
    #: (the anomaly score is a percentile rank: 0.995 = the 0.5 % most unusual events).
    review_threshold: Fraction = 0.995
    #: Fused score at or above which the decision is "block".
    block_threshold: Fraction = 0.9995
    #: Features named in each alert's reasons.
    top_features: Annotated[int, msgspec.Meta(ge=0, le=128)] = 3
    #: The batch classifier from the registry (backtest today; actors when they serve it).
    classifier: ClassifierSettings = ClassifierSettings()
    #: The online classifier learned from delayed labels.
    online: OnlineSettings = OnlineSettings()
    #: A YAML file of rules (``rules: [{name, when, action, score}, ...]``) used instead of ``rules``; "" = none.
    #: A relative path resolves against the config file's folder. The stream job reloads it when it changes.
    rules_file: str = ""
    #: How the sources' scores are combined into the fused score.
    fusion: FusionSettings = FusionSettings()

    def __post_init__(self) -> None:
        if self.block_threshold < self.review_threshold:
            raise ValueError("block_threshold must be at least review_threshold")
        names = [rule.name for rule in self.rules]
        if len(names) != len(set(names)):
            raise ValueError(f"rules: rule names must be unique, got {names}")
        for i, rule in enumerate(self.rules):
            problem = review_score_problem(rule, self.block_threshold)
            if problem:
                raise ValueError(f"rules[{i}]: {problem}")


class AutoscaleSettings(_Section, frozen=True):
    """Lag-driven autoscaling of the scoring actors (the controller rescales K while running; off by default).

    The lag is the age of the oldest transaction not yet scored (now - its Kafka timestamp), the most of
    any partition. K doubles while it stays above ``scale_out_lag_s`` and the backlog is not about to be
    gone, and steps down once it stayed near 0 for ``scale_in_idle_s``; never within ``cooldown_s`` of
    the last change, always within [min_actors, max_actors] and never above the partitions of
    ``transactions`` (see :mod:`actors.autoscale`).
    """

    enabled: bool = False
    #: Fewest and most scoring actors (max_actors beyond the transactions partitions counts as that many).
    min_actors: PositiveInt = 1
    max_actors: PositiveInt = 4
    #: Add actors when the lag stays above this many seconds (for as long again).
    scale_out_lag_s: Annotated[float, msgspec.Meta(gt=0.0)] = 30.0
    #: Remove actors when the lag stayed near 0 for this many seconds.
    scale_in_idle_s: Annotated[float, msgspec.Meta(gt=0.0)] = 300.0
    #: No change within this many seconds of the previous one (or of the job's start).
    cooldown_s: Annotated[float, msgspec.Meta(ge=0.0)] = 120.0

    def __post_init__(self) -> None:
        if self.min_actors > self.max_actors:
            raise ValueError(f"min_actors: {self.min_actors} is above max_actors ({self.max_actors}); "
                             "lower min_actors or raise max_actors")


class StreamSettings(_Section, frozen=True):
    """The scoring job: actors, micro-batches, checkpoints."""

    #: Scoring actors (K); actor k owns the partitions p with p mod K == k.
    actors: PositiveInt = 2
    #: CPUs Ray reserves per scoring actor.
    actor_num_cpus: Annotated[float, msgspec.Meta(gt=0.0)] = 0.5
    #: Ray restarts a scoring actor, and the controller, this many times (-1 = forever).
    max_restarts: Annotated[int, msgspec.Meta(ge=-1)] = -1
    #: Where Ray puts the scoring actors: ``spread`` over the nodes (each next actor on another node that has
    #: room: a lost node takes few partitions with it) or ``pack`` (Ray's default: fill a node before the next).
    placement: Literal["spread", "pack"] = "spread"
    #: Custom Ray resources the controller needs, e.g. ``{"on-demand": 0.01}`` to keep it off spot nodes
    #: (it runs only on nodes started with ``--resources`` offering them); empty: any node (the driver's first).
    controller_resources: dict[str, Annotated[float, msgspec.Meta(gt=0.0)]] = msgspec.field(default_factory=dict)
    #: Most records taken per poll (per actor, all its partitions).
    max_batch_records: PositiveInt = 1_000
    #: Hold a partition's transactions until the broadcast terminal table is complete for the buckets they read
    #: (event-time alignment, as Flink's watermark alignment): a backlog is scored as a live stream is.
    terminal_alignment: bool = True
    #: Transactions a partition holds at most while waiting for the table (the partition is paused at the bound).
    max_held_transactions: PositiveInt = 20_000
    #: Longest a poll waits for records.
    max_batch_wait_ms: NonNegativeInt = 20
    #: Longest a broker holds an actor's fetch that finds no data (data arriving meanwhile is answered at
    #: once). Small for the embedded broker, whose fetch latency is this wait; 100-500 on Kafka, where idle
    #: actors fetching every few milliseconds keep the brokers busy.
    fetch_max_wait_ms: PositiveInt = 5
    #: With kafka.exactly_once: an actor commits its transaction at most once per this interval (a transaction
    #: costs several round trips to the coordinator); the micro-batches in between share one, and their alerts
    #: are visible to read_committed readers at its commit (up to this much later).
    transaction_interval_ms: PositiveInt = 100
    #: Where checkpoints go: a local directory or a pyarrow.fs URI (s3://bucket/prefix).
    checkpoint_uri: str = "checkpoints"
    #: A partition is checkpointed when this much time or this many events passed.
    checkpoint_interval_s: Annotated[float, msgspec.Meta(gt=0.0)] = 30.0
    checkpoint_interval_events: PositiveInt = 200_000
    #: Complete checkpoints kept per partition.
    checkpoint_keep: Annotated[int, msgspec.Meta(ge=1, le=100)] = 3
    #: Ray cluster address; empty = connect to RAY_ADDRESS if set, else start local Ray.
    ray_address: str = ""
    #: Where `fraudstream status` finds the running job's status file.
    status_path: str = ".fraudstream/status.json"
    status_interval_s: Annotated[float, msgspec.Meta(gt=0.0)] = 2.0
    #: A record value larger than this (bytes) is dead-lettered without being parsed.
    max_record_bytes: PositiveInt = 1_000_000
    #: Deepest nesting of JSON arrays and objects a record may have, checked before parsing.
    max_nesting_depth: Annotated[int, msgspec.Meta(ge=1, le=256)] = 32
    #: A dead letter embeds the original key and value up to this size (bytes); larger ones are
    #: referenced by topic, partition and offset, with their size and SHA-256.
    dead_letter_embed_max_bytes: NonNegativeInt = 100_000
    #: A record whose Kafka key is missing or not its account_id: dead_letter, or rekey (produced
    #: again keyed by its account_id, so it reaches the partition holding that account's state).
    wrong_key: Literal["dead_letter", "rekey"] = "dead_letter"
    #: A send that fails is retried after this long, doubling up to delivery_backoff_max_ms.
    delivery_backoff_ms: PositiveInt = 100
    delivery_backoff_max_ms: PositiveInt = 5_000
    #: No successful fetch from Kafka for this long: status says the actor is waiting for Kafka.
    kafka_wait_grace_s: Annotated[float, msgspec.Meta(gt=0.0)] = 10.0
    #: Lag-driven autoscaling of the actors (off by default).
    autoscale: AutoscaleSettings = AutoscaleSettings()


#: A console user's name (the key of ``console.users``).
USER_NAME = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")
CONSOLE_ROLES = ("viewer", "analyst")
#: ``scrypt$N$r$p$salt$hash`` (salt and hash in URL-safe base64): what `fraudstream console hash-password` prints.
PASSWORD_HASH = re.compile(r"^scrypt\$[1-9][0-9]{0,9}\$[1-9][0-9]{0,3}\$[1-9][0-9]{0,3}\$[A-Za-z0-9_-]{16,}={0,2}\$[A-Za-z0-9_-]{32,}={0,2}$")


class ConsoleUser(_Section, frozen=True):
    """One person who may sign in to the console: a password hash (never the password) and a role."""

    #: ``scrypt$N$r$p$salt$hash``, from `fraudstream console hash-password`.
    password_hash: str
    #: ``viewer`` sees the queue; ``analyst`` also gives verdicts.
    role: str = "viewer"


class ConsoleSettings(_Section, frozen=True):
    """`fraudstream console`: the analysts' web page over the alerts topic, whose verdicts become labels.

    Without ``users`` the console serves anyone who reaches it as an analyst, so it starts only on a
    loopback ``host``; with users, everyone signs in and each request is checked against their role.
    """

    #: Address and port the web server listens on.
    host: Annotated[str, msgspec.Meta(min_length=1)] = "127.0.0.1"
    port: Port = 8765
    #: User name -> password hash and role (viewer or analyst).
    users: dict[str, ConsoleUser] = msgspec.field(default_factory=dict)
    #: A sign-in lasts this long (seconds), then the user signs in again.
    session_ttl_s: Annotated[float, msgspec.Meta(gt=0.0)] = 8 * 3600.0
    #: Name of the environment variable holding the key that signs sessions; unset: a random key per start
    #: (everyone signs in again after a restart).
    secret_key_env: str = "FRAUDSTREAM_CONSOLE_SECRET"
    #: Append-only JSON-lines log of every verdict (alert, verdict, analyst, time).
    audit_path: str = ".fraudstream/verdicts.jsonl"
    #: Alerts kept in memory (the oldest are dropped first), and recent alerts shown per account.
    max_alerts: PositiveInt = 10_000
    recent_per_account: PositiveInt = 20
    #: At start, alerts written this many seconds back are read into the queue; null: the whole topic.
    backfill_s: Annotated[float, msgspec.Meta(ge=0.0)] | None = 3600.0
    #: How often the page gets the running job's status (``stream.status_path``).
    status_interval_s: Annotated[float, msgspec.Meta(gt=0.0)] = 2.0
    #: How long the champion/challenger versions read from the MLflow registry are kept before it is asked again
    #: (seconds): the registry answers slowly, and the page shows them beside the versions the job serves.
    registry_interval_s: Annotated[float, msgspec.Meta(gt=0.0)] = 30.0

    def __post_init__(self) -> None:
        for name, user in self.users.items():
            if not USER_NAME.match(name):
                raise ValueError(f"users: {name!r} is not a user name (1 to 64 letters, digits, and . _ @ -)")
            if user.role not in CONSOLE_ROLES:
                raise ValueError(f"users.{name}.role: unknown role {user.role!r} (allowed: {', '.join(CONSOLE_ROLES)})")
            if not PASSWORD_HASH.match(user.password_hash):
                raise ValueError(
                    f"users.{name}.password_hash: not a password hash (expected scrypt$N$r$p$salt$hash); never put "
                    "a password in the config: make the hash with `fraudstream console hash-password`"
                )

    @property
    def loopback(self) -> bool:
        """True when ``host`` is reachable from this machine only.

        >>> ConsoleSettings().loopback, ConsoleSettings(host="localhost").loopback, ConsoleSettings(host="0.0.0.0").loopback
        (True, True, False)
        """
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host.strip("[]")).is_loopback
        except ValueError:  # a host name: it may resolve anywhere
            return False

    def exposure_problem(self) -> str | None:
        """Why the console must not start as configured (open to the network without sign-in), else None."""
        if self.loopback or self.users:
            return None
        return (
            f"config error: console.host: {self.host} is not a loopback address and console.users is empty, so "
            "anyone who reaches it could read alerts and give verdicts; add console.users (password hashes from "
            "`fraudstream console hash-password`) or set console.host: 127.0.0.1"
        )


class Settings(_Section, frozen=True):
    """The whole configuration."""

    kafka: KafkaSettings = KafkaSettings()
    producer: ProducerSettings = ProducerSettings()
    generator: GeneratorSettings = GeneratorSettings()
    features: FeatureSettings = FeatureSettings()
    mlflow: MlflowSettings = MlflowSettings()
    scoring: ScoringSettings = ScoringSettings()
    stream: StreamSettings = StreamSettings()
    history: HistorySettings = HistorySettings()
    training: TrainingSettings = TrainingSettings()
    evaluation: EvaluationSettings = EvaluationSettings()
    backtest: BacktestSettings = BacktestSettings()
    console: ConsoleSettings = ConsoleSettings()

    def __post_init__(self) -> None:
        autoscale, partitions = self.stream.autoscale, self.kafka.topics.transactions.partitions
        if autoscale.enabled and autoscale.min_actors > partitions:
            raise ValueError(
                f"stream.autoscale.min_actors: {autoscale.min_actors} is more than the {partitions} partitions of "
                "kafka.topics.transactions, and an actor without a partition scores nothing; lower min_actors "
                "or add partitions"
            )
        retention = self.kafka.topics.terminal_risk.configs.get("retention.ms")
        needed = risk_retention_ms(self.features)
        if retention is not None and 0 <= int(retention) < needed:
            raise ValueError(
                f"kafka.topics.terminal_risk.configs.retention.ms: {retention} is shorter than the features' "
                f"look-back ({needed} ms: label_delay_days + the longest entity window, or terminal_window_days, "
                "plus allowed_lateness_s); an actor starting later would miss terminal updates: raise it or "
                "use -1 (no limit)"
            )


def risk_retention_ms(features: FeatureSettings) -> int:
    """How long terminal.risk must keep an update: the longest a feature looks back at a terminal's history.

    >>> risk_retention_ms(FeatureSettings())  # 7 days of label delay + a 30-day window + a day, + 300 s lateness
    3283500000
    """
    day = 86_400_000
    entity = features.label_delay_days + max(features.entity_windows_days, default=0) if features.entity_kinds else 0
    days = max(features.terminal_window_days, entity)
    # a day more: the windows end at the last day closed, up to a day before their nominal end
    return int((days + 1) * day) + features.allowed_lateness_s * 1000


_AT_PATH = re.compile(r"^(?P<problem>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_UNKNOWN = re.compile(r"Object contains unknown field `(?P<field>[^`]+)`")
_NAMED = re.compile(r"^(?P<key>[a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)*): (?P<rest>.*)$", re.DOTALL)
_MISSING = re.compile(r"Object missing required field `(?P<field>[^`]+)`")
_INDEXED = re.compile(r"^(?P<name>[^\[\]]+)(?P<indexes>(?:\[\d+\])*)$")


def _section_type(path: str, root: Any = Settings) -> Any:
    """The struct type at a dotted path below ``root`` (``scoring.rules[0]``: an element; None when not a struct)."""
    current: Any = root
    for part in [p for p in path.split(".") if p]:
        match = _INDEXED.match(part)
        fields = {f.name: f.type for f in msgspec.structs.fields(current)} if _is_struct(current) else {}
        if match is None or match.group("name") not in fields:
            return None
        current = _unwrap(fields[match.group("name")])
        for _ in range(match.group("indexes").count("[")):
            args = typing.get_args(current)
            if typing.get_origin(current) not in (tuple, list) or not args:
                return None
            current = _unwrap(args[0])
    return current if _is_struct(current) else None


def _is_struct(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, msgspec.Struct)


def _unwrap(tp: Any) -> Any:
    while typing.get_origin(tp) in (Annotated, typing.Union) or type(tp).__name__ == "UnionType":
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        tp = args[0]
    return tp


def _allowed_values(path: str, root: Any = Settings) -> str | None:
    parent, _, leaf = path.rpartition(".")
    section = _section_type(parent, root)
    if section is None:
        return None
    tp = {f.name: f.type for f in msgspec.structs.fields(section)}.get(leaf)
    while tp is not None:
        if typing.get_origin(tp) is Literal:
            return ", ".join(repr(v) for v in typing.get_args(tp))
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        tp = args[0] if typing.get_origin(tp) in (Annotated, typing.Union) or type(tp).__name__ == "UnionType" else None
    return None


def _describe(exc: msgspec.ValidationError, root: Any = Settings) -> tuple[str, str]:
    """(dotted key below ``root``, problem and fix) of a validation error."""
    match = _AT_PATH.match(str(exc))
    assert match is not None
    problem, path = match.group("problem"), (match.group("path") or "").lstrip(".")
    unknown = _UNKNOWN.search(problem)
    if unknown:
        key = unknown.group("field")
        full = f"{path}.{key}".lstrip(".")
        if key == "password" and path.startswith("console.users"):
            return full, "a password is never read from the config; give password_hash, made with `fraudstream console hash-password`"
        if key in _SECRET_KEYS:
            return full, (
                "secrets are not read from YAML; put the value in the environment variable named by "
                f"{_SECRET_KEYS[key]}"
            )
        section = _section_type(path, root)
        allowed = ", ".join(f.name for f in msgspec.structs.fields(section)) if section else "see configs/local.yaml"
        return full, f"unknown key (allowed: {allowed})"
    missing = _MISSING.search(problem)
    if missing:
        return f"{path + '.' if path else ''}{missing.group('field')}", "required key is missing"
    choices = _allowed_values(path, root) if "enum" in problem.lower() else None
    suffix = f" (allowed: {choices})" if choices else ""
    # a section's own check (__post_init__) names its key first: "ssl_ca_file: ..." below "kafka" is kafka.ssl_ca_file
    section = _section_type(path, root)
    named = _NAMED.match(problem)
    if section is not None and named and named.group("key").split(".")[0] in {f.name for f in msgspec.structs.fields(section)}:
        return f"{path}.{named.group('key')}".lstrip("."), f"{named.group('rest')}{suffix}"
    return path, f"{problem}{suffix}"


def _format(exc: msgspec.ValidationError) -> str:
    key, problem = _describe(exc)
    return f"config error: {key or '(top level)'}: {problem}"


def settings_from_dict(data: dict[str, Any] | None, base_dir: str | os.PathLike[str] | None = None) -> Settings:
    """Validate a parsed YAML mapping into :class:`Settings`; raises :class:`ConfigError`.

    With ``scoring.rules_file`` set, the file's rules replace ``scoring.rules``
    (their shape checked by :func:`read_rules_file`) and ``rules_file`` becomes an
    absolute path (a relative one resolves against ``base_dir``, default the
    working directory). The rules' conditions are *not* compiled here: that needs
    the feature registry, which sits above ``configs``. Programs call
    :func:`models.checked_settings.settings_from_dict`, which compiles them.
    """
    try:
        settings = msgspec.convert(data or {}, Settings)
    except msgspec.ValidationError as exc:
        raise ConfigError(_format(exc)) from None
    if settings.scoring.rules_file:
        inline = ((data or {}).get("scoring") or {}).get("rules")
        if inline is not None:
            raise ConfigError(
                "config error: scoring.rules_file: set together with scoring.rules, whose rules it would replace; "
                "remove scoring.rules (or set rules_file: \"\" to use them)"
            )
        settings = _with_rules_file(settings, Path(base_dir) if base_dir is not None else Path.cwd())
    return settings


def read_rules_file(path: str | os.PathLike[str], block_threshold: float | None = None) -> tuple[RuleSettings, ...]:
    """The rules of a rules file (``scoring.rules_file``), checked like ``scoring.rules``.

    The file is YAML, ``rules: [{name, when, action, score}, ...]`` (``rules: []``
    = no rules). Checked here: the shape, each rule's keys and values, unique
    names and, with ``block_threshold``, that no review rule scores at or above
    it; every problem is a one-line ConfigError naming the file, the rule
    (``rules[i]``, its name) and the key. Conditions are compiled against the
    features by :func:`models.rules.load_rules_file` (and, for the settings, by
    :mod:`models.checked_settings`).
    """
    file = Path(path)
    example = "rules: [{name: big_amount, when: 'amount > 5000', action: review, score: 0.97}]"
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"config error: scoring.rules_file: file {str(file)!r} not found; create it ({example}) "
            "or set scoring.rules_file: \"\" to use scoring.rules"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(f"config error: scoring.rules_file: cannot read {str(file)!r} ({reason}); "
                          "make it a readable UTF-8 YAML file") from None  # fmt: skip
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"config error: {file}{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config error: {file}: expected a mapping with a list of rules, e.g. {example}")
    unknown = sorted(str(key) for key in data if key != "rules")
    if unknown:
        raise ConfigError(f"config error: {file}: {unknown[0]}: unknown key (allowed: rules)")
    if "rules" not in data:
        raise ConfigError(f"config error: {file}: rules: required key is missing; e.g. {example}")
    raw_rules = data["rules"] if data["rules"] is not None else []
    if not isinstance(raw_rules, list):
        raise ConfigError(f"config error: {file}: rules: expected a list of rules, got {type(raw_rules).__name__}; "
                          f"e.g. {example}")  # fmt: skip
    rules: list[RuleSettings] = []
    first: dict[str, int] = {}
    for i, raw in enumerate(raw_rules):
        name = raw.get("name") if isinstance(raw, dict) else None
        rule_part = f"rule {name!r}: " if isinstance(name, str) else ""
        try:
            rule = msgspec.convert(raw, RuleSettings)
        except msgspec.ValidationError as exc:
            key, problem = _describe(exc, RuleSettings)
            at = f"rules[{i}].{key}" if key else f"rules[{i}]"
            raise ConfigError(f"config error: {file}: {at}: {rule_part}{problem}") from None
        if rule.name in first:
            raise ConfigError(f"config error: {file}: rules[{i}].name: rule {rule.name!r} is also "
                              f"rules[{first[rule.name]}]; give each rule its own name")  # fmt: skip
        first[rule.name] = i
        too_high = review_score_problem(rule, block_threshold) if block_threshold is not None else None
        if too_high:
            raise ConfigError(f"config error: {file}: rules[{i}].score: {too_high}")
        rules.append(rule)
    return tuple(rules)


def _with_rules_file(settings: Settings, base_dir: Path) -> Settings:
    """``settings`` with the rules of ``scoring.rules_file`` (their shape checked, conditions not compiled)
    and its absolute path."""
    scoring = settings.scoring
    path = Path(scoring.rules_file).expanduser()
    path = (path if path.is_absolute() else base_dir / path).resolve()
    rules = read_rules_file(path, block_threshold=scoring.block_threshold)
    scoring = msgspec.structs.replace(scoring, rules=rules, rules_file=str(path))
    return msgspec.structs.replace(settings, scoring=scoring)


def default_config_path() -> Path:
    """The bundled embedded-defaults configuration (``configs/local.yaml``)."""
    return Path(__file__).with_name("local.yaml")


def load_settings(path: str | os.PathLike[str] | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Read, validate and return the settings in ``path`` (default: configs/local.yaml).

    ``overrides`` maps dotted keys (``kafka.bootstrap_servers``) to values applied
    before validation, as command-line options do. ``scoring.rules_file`` is read
    here (relative to the config file's folder) and its shape checked, but its
    conditions are *not* compiled against the features: programs load their
    settings with :func:`models.checked_settings.load_settings`, which does, so a
    bad rules file stops start-up with one line. Every error ends with
    `` [in <config file>]``.
    """
    config_path = Path(path) if path is not None else default_config_path()
    if not config_path.is_file():
        raise ConfigError(f"config error: file {str(config_path)!r} not found; pass --config PATH")
    try:
        data = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"config error: {config_path}{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"config error: {config_path}: the top level must be a mapping of sections")
    data = dict(data or {})
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    try:
        return settings_from_dict(data, base_dir=config_path.parent)
    except ConfigError as exc:
        raise ConfigError(f"{exc} [in {config_path}]") from None
