"""One Kafka partition's pipeline, without the I/O: decode, features, score, decide.

A :class:`PartitionProcessor` belongs to a Kafka partition, not to an actor
(DESIGN.md decision 2): it holds that partition's feature engine, its model
state and its positions in the ``transactions`` and ``labels`` topics, and it
round-trips through a checkpoint. The scoring actor feeds it the records it
polled and sends what comes back (alerts, dead letters); nothing here talks to
Kafka, Ray or a filesystem, so it is tested fast and replayed exactly.

Features, scores and labels go through :class:`models.pipeline.PartitionPipeline`,
the pipeline the backtest replays; this module adds what only a live stream has:
decoding records (bad ones become dead letters), alerts, alignment with the
terminal table, the partition's share of the terminal stage and checkpoints.

Labels join the stream in event time: a label is applied once the partition's
event-time clock (the latest transaction time seen) has reached its
``label_time``, in offset order (:class:`features.labels.LabelQueue`, the rule
the producer and the offline builder apply too). A label that arrives before
the stream has got that far is held (bounded; the actor pauses the labels
partition while the buffer is full), so a backlog replayed at any speed joins
labels identically.

Transactions are aligned with the broadcast terminal table in event time (as
Flink aligns watermarks) when :attr:`PartitionProcessor.align` is set (the
scoring actors set it from ``stream.terminal_alignment``): a transaction at
``t`` reads the table's buckets that closed by ``t - terminal_freshness_s``,
so it is scored only once every partition's updates before that bucket edge
are in the table (``BroadcastRisk.complete_through_ms``); until then it is
held, in offset order (bounded: the actor pauses the partition while the
buffer is full), and :meth:`PartitionProcessor.release_held` scores what the
table's progress lets through. A backlog replayed at any speed thus reads the
table a live stream reads. The partition's progress is the first held
transaction's time, so the slowest partition can always go on and nothing
waits on itself.
"""

from __future__ import annotations

import hashlib
import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from actors.messages import CHECKPOINT_FORMAT, PartitionCheckpointMeta, PartitionCounters
from actors.serving import Served
from actors.terminal_stage import IDLE, UNKNOWN, BroadcastRisk, DeltaBatch, SourceShare
from configs import RuleSettings, Settings
from contracts.errors import RecordError
from contracts.guards import DecodeLimits
from contracts.records import (
    Alert,
    DeadLetter,
    Label,
    SourcePosition,
    Transaction,
    decode_labels,
    decode_transactions,
    encode,
)
from features import FeatureEngine
from features.labels import LabelQueue
from features.state import (
    TERMINAL_BUCKETS_SCHEMA,
    TERMINAL_DAYS_SCHEMA,
    TERMINAL_FRAUDS_SCHEMA,
    EngineSnapshot,
    FrozenEngine,
    TerminalCopy,
    freeze_engine,
    ipc_bytes,
    read_ipc_batch,
    restore_engine,
    take_snapshot,
    terminal_copies,
    terminal_copies_to_batches,
    terminal_from_batches,
)
from models import Scorer
from models.batch import ClassifierSource
from models.pipeline import PartitionPipeline, new_scorer, with_classifier


class Record(Protocol):
    """What the processor needs of a consumed Kafka record (aiokafka's ConsumerRecord fits)."""

    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int


@dataclass
class Output:
    """What one call produced: (key, value) pairs to send, by destination."""

    alerts: list[tuple[bytes, bytes]] = field(default_factory=list)
    dead_letters: list[bytes] = field(default_factory=list)
    #: Records refused for their key, to produce again keyed by account_id: (topic, key, value).
    rekeyed: list[tuple[str, bytes, bytes]] = field(default_factory=list)
    #: Send timestamps to measure ingest -> alert latency: Kafka timestamp of each alerted record.
    alert_ingest_ms: list[int] = field(default_factory=list)
    scored: int = 0
    #: Events the shadow challenger would have alerted on.
    challenger_alerts: int = 0


def alert_id(transaction_id: str, feature_version: str, model_versions: dict[str, str]) -> str:
    """Deterministic alert id: the same transaction scored by the same versions gives the same id.

    >>> alert_id("t1", "fs1-0", {"anomaly": "hst"}) == alert_id("t1", "fs1-0", {"anomaly": "hst"})
    True
    >>> len(alert_id("t1", "fs1-0", {}))
    32
    """
    parts = [transaction_id, feature_version, *(f"{k}={v}" for k, v in sorted(model_versions.items()))]
    return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=16).hexdigest()


def dead_letter(topic: str, partition: int, record: Record, error: RecordError | str, embed_max_bytes: int | None = None) -> bytes:
    """A dead-letter value: the original bytes (referenced instead above ``embed_max_bytes``), where they came
    from and why they were refused."""
    letter = DeadLetter(
        key=record.key,
        value=record.value,
        topic=topic,
        partition=partition,
        offset=record.offset,
        error=str(error),
        field=error.field if isinstance(error, RecordError) else None,
        failed_at=int(time.time() * 1000),
        value_size=None if record.value is None else len(record.value),
    )
    if embed_max_bytes is not None and len(record.value or b"") + len(record.key or b"") > embed_max_bytes:
        letter = letter.without_bytes(f"larger than stream.dead_letter_embed_max_bytes ({embed_max_bytes})")
    return encode(letter)


def wrong_key(record: str, key: bytes | None, account_id: str) -> RecordError:
    """Why a record whose Kafka key is not its account_id is refused (it sits on another account's partition)."""
    found = "missing (null)" if key is None else f"{key[:64]!r}, not the account_id {account_id!r}"
    return RecordError(record, "key", f"the Kafka key is {found}",
                       fix="key every record by its account_id (or set stream.wrong_key: rekey), so it reaches "
                           "the partition that holds the account's state")


@dataclass(frozen=True)
class ReplayMarks:
    """What the last committed Kafka transaction recorded of a partition (``kafka.exactly_once``): its
    positions and the offsets read by then. A partition restored from an older checkpoint replays up to
    them without output (the outputs are in Kafka already): no alert for a transaction before
    ``next_offset`` (alerts are written when a record is scored), no dead letter or re-keyed record for one
    before ``read_offset`` (written when it is read), none for a label before ``read_label_offset``."""

    next_offset: int
    read_offset: int
    next_label_offset: int
    read_label_offset: int

    @classmethod
    def of(cls, transactions: Any, labels: Any) -> ReplayMarks | None:
        """From the committed (offset, metadata) of the partition in ``transactions`` and ``labels`` (None:
        nothing committed); the metadata holds the offset read (the offset itself when it does not)."""
        if transactions is None and labels is None:
            return None

        def position(committed: Any) -> tuple[int, int]:
            if committed is None:
                return 0, 0
            read = committed.metadata
            return committed.offset, int(read) if read.isdigit() else committed.offset

        next_offset, read_offset = position(transactions)
        next_label_offset, read_label_offset = position(labels)
        return cls(next_offset, max(read_offset, next_offset), next_label_offset, max(read_label_offset, next_label_offset))


@dataclass(frozen=True)
class PartitionSnapshot:
    """A partition's state as copies nobody else holds, and its checkpoint metadata.

    Taking it (:meth:`PartitionProcessor.snapshot`) only copies; building the
    Arrow batches and encoding them (:meth:`blobs`) is the costly part, and runs
    in another thread while the processor goes on.
    """

    features: FrozenEngine
    scorer: bytes
    terminals: list[TerminalCopy]
    meta: PartitionCheckpointMeta

    def blobs(self) -> dict[str, bytes]:
        """The checkpoint blobs (Arrow IPC, zstd)."""
        terminal_buckets, terminal_frauds, terminal_days = terminal_copies_to_batches(self.terminals)
        return {
            "features": self.features.snapshot().to_bytes(),
            "scorer": self.scorer,
            "terminal_buckets": ipc_bytes(terminal_buckets, "zstd"),
            "terminal_frauds": ipc_bytes(terminal_frauds, "zstd"),
            "terminal_days": ipc_bytes(terminal_days, "zstd"),
        }


class PartitionProcessor:
    """Feature state, model state and positions of one partition of ``transactions``/``labels``."""

    def __init__(
        self,
        settings: Settings,
        partition: int,
        broadcast: BroadcastRisk,
        engine: FeatureEngine | None = None,
        scorer: Scorer | None = None,
        share: SourceShare | None = None,
    ) -> None:
        self.settings = settings
        self.partition = partition
        self.transactions_topic = settings.kafka.topics.transactions.name
        self.labels_topic = settings.kafka.topics.labels.name
        #: Engines read the broadcast table (publishing mode: their updates go to the outbox).
        self.broadcast = broadcast
        engine = engine if engine is not None else FeatureEngine(settings.features, broadcast.table)
        scorer = scorer if scorer is not None else new_scorer(settings.scoring, engine.registry)
        #: Features -> score -> due labels, as the backtest replays them; its label queue holds (offset, label).
        self.pipeline: PartitionPipeline[tuple[int, Label]] = PartitionPipeline(scorer, engine)
        #: This partition's own contribution to every terminal (sent to the stage as cumulative values).
        self.share = share if share is not None else SourceShare(FeatureEngine.terminal_risk_for(settings.features), partition)
        #: (transactions, frauds, days) taken from the outbox, not yet folded into the share
        self._updates: tuple[list[tuple[str, int, int]], ...] = ([], [], [])
        freshness = settings.features.terminal_freshness_s * 1000
        bucket = settings.features.terminal_bucket_s * 1000
        self._freshness_ms, self._bucket_ms = freshness, bucket
        #: Latest label time read from the labels partition (labels arrive in label-time order).
        self.label_clock = UNKNOWN
        #: Next offset to read in each topic's partition (what a checkpoint records).
        self.next_offset = 0
        self.next_label_offset = 0
        self.max_held_labels = settings.features.pending_labels_max
        #: Hold transactions until the broadcast table is complete for what they read (the actors set it).
        self.align = False
        #: Transactions read but not scored yet (waiting for the table): (record, transaction), in offset order.
        self.held: deque[tuple[Record, Transaction]] = deque()
        #: The offset after the last transaction / label record read (held or not).
        self._read_offset = 0
        self._read_label_offset = 0
        #: Kafka timestamp (ms) of the last transaction record read since the partition was assigned (None: none).
        self.last_read_timestamp_ms: int | None = None
        #: Exactly-once: what the last committed transaction recorded; outputs before it are not made again.
        self.replay: ReplayMarks | None = None
        self.max_held = settings.stream.max_held_transactions
        self.counters = PartitionCounters()
        stream = settings.stream
        self._limits = DecodeLimits(max_record_bytes=stream.max_record_bytes, max_nesting_depth=stream.max_nesting_depth)
        self._embed_max = stream.dead_letter_embed_max_bytes
        #: The batch classifier scoring in shadow (never deciding), when a challenger is served.
        self.challenger: ClassifierSource | None = None

    @property
    def engine(self) -> Any:
        """The partition's :class:`~features.FeatureEngine` (its feature state)."""
        return self.pipeline.engine

    @property
    def scorer(self) -> Scorer:
        """The partition's scorer (its model state)."""
        return self.pipeline.scorer

    @scorer.setter
    def scorer(self, scorer: Scorer) -> None:
        self.pipeline.scorer = scorer

    @property
    def read_offset(self) -> int:
        """The offset after the last transaction read (held or not; an output of each was made by then)."""
        return max(self._read_offset, self.next_offset)

    @property
    def read_label_offset(self) -> int:
        """The offset after the last label read (held or not)."""
        return max(self._read_label_offset, self.next_label_offset)

    def resume_transactions_at(self, offset: int) -> None:
        """Read transactions from ``offset`` on, forgetting those held (the log no longer has ours)."""
        self.held.clear()
        self.next_offset = self._read_offset = offset
        self.last_read_timestamp_ms = None

    def resume_labels_at(self, offset: int) -> None:
        """Read labels from ``offset`` on, forgetting those held (the log no longer has ours)."""
        self.held_labels.clear()
        self.next_label_offset = self._read_label_offset = offset

    def committed_positions(self) -> ReplayMarks:
        """What a transaction commits for this partition: its positions, never behind what the last one
        committed (a partition replaying from an older checkpoint must not move the committed offsets back)."""
        own = ReplayMarks(self.next_offset, self.read_offset, self.next_label_offset, self.read_label_offset)
        replay = self.replay
        if replay is None:
            return own
        return ReplayMarks(*(max(a, b) for a, b in zip(
            (own.next_offset, own.read_offset, own.next_label_offset, own.read_label_offset),
            (replay.next_offset, replay.read_offset, replay.next_label_offset, replay.read_label_offset),
            strict=True)))

    @property
    def held_labels(self) -> LabelQueue[tuple[int, Label]]:
        """Labels read but not applied yet: (offset, label), in offset order."""
        return self.pipeline.labels

    def use_classifiers(self, served: Served) -> None:
        """Score from the next micro-batch on with these registry versions (champion decides, challenger shadows).

        The scorer's learned state is untouched: only the stateless classifier source is replaced.
        """
        self.scorer = with_classifier(self.scorer, served.champion)
        self.challenger = served.challenger

    def online_snapshot(self) -> bytes | None:
        """The partition's online classifier as it has learned so far (no held vectors), None without one."""
        for source in self.scorer.sources:
            snapshot = getattr(source, "snapshot_bytes", None)
            if snapshot is not None:
                return snapshot()  # type: ignore[no-any-return]
        return None

    def use_rules(self, rules: tuple[RuleSettings, ...]) -> None:
        """Decide with these rules from the next micro-batch on (a reload); ConfigError leaves the old ones."""
        self.scorer.replace_rules(rules)

    # ---------------------------------------------------------------- transactions
    def process_transactions(self, records: list[Record], now_ms: int | None = None) -> Output:
        """Score a micro-batch of this partition's transaction records (in offset order); with :attr:`align`,
        those the terminal table is not complete for yet are held (:meth:`release_held` scores them later)."""
        out = Output()
        if not records:
            return out
        good, kept = self._accept(records, decode_transactions, "transaction", self.transactions_topic, out)
        self.next_offset = self._read_offset = records[-1].offset + 1
        self.last_read_timestamp_ms = records[-1].timestamp
        if self.align:
            self.held.extend(zip(kept, good))
            return self.release_held(now_ms, out)
        if good:
            self._score(good, kept, now_ms, out)
        return out

    def _table_needs_ms(self, event_time_ms: int) -> int:
        """The table must hold every update before this time to answer for a transaction at ``event_time_ms``."""
        return ((event_time_ms - self._freshness_ms) // self._bucket_ms) * self._bucket_ms

    @property
    def waiting(self) -> bool:
        """True while held transactions wait for the table (its progress, not a full batch, lets them go)."""
        return bool(self.held)

    @property
    def waiting_since_ms(self) -> int | None:
        """Kafka timestamp (ms) from which the oldest transaction not scored yet has waited: the first held
        one's when one is held (exact), else the last one read's (records are appended about in the order
        they were sent, so the next one was sent no earlier); None when nothing was read since the assignment.
        """
        if self.held:
            return int(self.held[0][0].timestamp)
        return self.last_read_timestamp_ms

    @property
    def transactions_full(self) -> bool:
        """True while the held-transaction buffer is at its bound (stop fetching transactions)."""
        return len(self.held) >= self.max_held

    def release_held(self, now_ms: int | None = None, out: Output | None = None) -> Output:
        """Score the held transactions the table is now complete for, in offset order; the rest stay held."""
        out = out if out is not None else Output()
        held = self.held
        if not held:
            return out
        first = int(held[0][1].event_time)
        label_ms = self.held_labels.head_ms
        if label_ms is not None and label_ms < first:
            # every transaction before the first held one is scored: labels from before it join now (in a
            # busy stream the offline builder's clock passed them before it too), and they no longer hold
            # this partition's progress, so it never waits on itself
            self._apply_due_labels(first - 1)
            self._collect_updates()
        complete = self.broadcast.complete_through_ms
        needs = self._table_needs_ms
        ready = 0
        for _, tx in held:
            if needs(tx.event_time) > complete:
                break
            ready += 1
        if ready:
            taken = [held.popleft() for _ in range(ready)]
            self._score([tx for _, tx in taken], [record for record, _ in taken], now_ms, out)
        # a checkpoint re-reads what was not scored
        self.next_offset = held[0][0].offset if held else self._read_offset
        return out

    def _score(self, good: list[Transaction], kept: list[Record], now_ms: int | None, out: Output) -> None:
        """Features, models and decisions of decoded transactions (in offset order); alerts into ``out``."""
        complete = self.broadcast.complete_through_ms
        needs = self._table_needs_ms
        if complete < IDLE and needs(max(tx.event_time for tx in good)) > complete:
            self.counters.terminal_stale += sum(needs(tx.event_time) > complete for tx in good)
        batch = self.pipeline.features(good)
        self._collect_updates()
        scored = self.pipeline.score(batch)
        out.scored += len(good)
        self.counters.scored += len(good)
        alerts_before = len(out.alerts)
        ingest_ms = int(time.time() * 1000) if now_ms is None else now_ms
        deciding = model_versions = self.scorer.model_versions
        shadow = None
        if self.challenger is not None:
            shadow = self.challenger.process(batch)
            model_versions = {**deciding, "challenger": self.challenger.version}
            would = shadow.action.astype(bool) | (shadow.score >= self.settings.scoring.review_threshold)
            out.challenger_alerts += int(would.sum())
            self.counters.challenger_alerts += int(would.sum())
            self.counters.challenger_agreed += sum(1 for row in would.nonzero()[0].tolist()
                                                   if scored.decision[row] is not None)
        feature_version = batch.version
        # exactly-once replay: alerts of transactions before this offset were committed already
        quiet_below = -1 if self.replay is None else self.replay.next_offset
        quiet = 0
        for row, decision in enumerate(scored.decision):
            if decision is None:
                continue
            tx, record = good[row], kept[row]
            if record.offset < quiet_below:
                quiet += 1
                continue
            alert = Alert(
                # the deciding versions only: a challenger moving does not make the same alert another one
                alert_id=alert_id(tx.transaction_id, feature_version, deciding),
                transaction_id=tx.transaction_id,
                account_id=tx.account_id,
                event_time=tx.event_time,
                score=float(scored.score[row]),
                decision=decision,  # type: ignore[arg-type]  # review or block
                reasons=scored.reasons[row],  # type: ignore[arg-type]  # set on every row with a decision
                model_versions=model_versions,
                feature_version=feature_version,
                ingest_time=ingest_ms,
                alert_time=int(time.time() * 1000) if now_ms is None else now_ms,
                late=bool(batch.late[row]),
                challenger_score=None if shadow is None else round(float(shadow.score[row]), 6),
                source=SourcePosition(topic=self.transactions_topic, partition=self.partition, offset=record.offset,
                                      timestamp=record.timestamp),
            )
            out.alerts.append((tx.account_id.encode(), encode(alert)))
            out.alert_ingest_ms.append(record.timestamp)
        self.counters.alerts += len(out.alerts) - alerts_before + quiet
        # labels held for this stretch of event time can join now
        self._apply_due_labels()
        self._collect_updates()

    # ---------------------------------------------------------------------- labels
    def process_labels(self, records: list[Record]) -> Output:
        """Take a micro-batch of label records; apply those whose time the stream has reached."""
        out = Output()
        if not records:
            return out
        labels, kept = self._accept(records, decode_labels, "label", self.labels_topic, out)
        if labels:
            times = [label.label_time for label in labels]
            self.held_labels.extend(times, [(record.offset, label) for record, label in zip(kept, labels)])
            self.label_clock = max(self.label_clock, *times)
        self._read_label_offset = records[-1].offset + 1
        if not self.held_labels:
            self.next_label_offset = records[-1].offset + 1
        self._apply_due_labels()
        self._collect_updates()
        return out

    def _accept(self, records: list[Record], decode: Any, kind: str, topic: str, out: Output) -> tuple[list[Any], list[Record]]:
        """Decode a micro-batch and keep the records keyed by their account: (decoded, their records).

        Every other record becomes a dead letter in ``out`` (or, with ``stream.wrong_key: rekey``, a
        record re-keyed by its account_id for ``out.rekeyed``); nothing a record holds raises here.
        """
        stream = self.settings.stream
        # exactly-once replay: what was made of records read before this offset was committed already
        replay = self.replay
        quiet_below = -1 if replay is None else replay.read_offset if topic == self.transactions_topic \
            else replay.read_label_offset
        decoded, bad = decode([r.value for r in records], self._limits)
        if bad:
            refused = {index for index, _ in bad}
            kept = [r for i, r in enumerate(records) if i not in refused]
            for index, error in bad:
                if records[index].offset >= quiet_below:
                    out.dead_letters.append(dead_letter(topic, self.partition, records[index], error, self._embed_max))
        else:
            kept = records
        misrouted = [i for i, (record, item) in enumerate(zip(kept, decoded)) if record.key != item.account_id.encode()]
        if misrouted:
            for i in misrouted:
                record, account_id = kept[i], decoded[i].account_id
                if record.offset < quiet_below:
                    continue
                if stream.wrong_key == "rekey":
                    out.rekeyed.append((topic, account_id.encode(), record.value))  # type: ignore[arg-type]
                else:
                    out.dead_letters.append(dead_letter(topic, self.partition, record,
                                                        wrong_key(kind, record.key, account_id), self._embed_max))
            drop = set(misrouted)
            kept = [r for i, r in enumerate(kept) if i not in drop]
            decoded = [d for i, d in enumerate(decoded) if i not in drop]
        self.counters.dead_letters += len(bad)
        if stream.wrong_key == "rekey":
            self.counters.rekeyed += len(misrouted)
        else:
            self.counters.dead_letters += len(misrouted)
        return decoded, kept

    @property
    def labels_full(self) -> bool:
        """True while the held-label buffer is at its bound (stop fetching labels)."""
        return len(self.held_labels) >= self.max_held_labels

    def _apply_due_labels(self, clock: int | None = None) -> None:
        """Apply the held labels whose time the clock (default: the latest transaction time scored) reached:
        joined to the feature state, then learned by the sources that learn from labels (online classifier)."""
        due = self.pipeline.due_labels(clock)
        if due:
            joined = self.pipeline.join_labels([label for _, label in due])
            counters = self.counters
            counters.labels_applied += joined.matched
            counters.labels_unmatched += joined.unmatched
            counters.labels_learned += joined.learned
            self.next_label_offset = due[-1][0] + 1
        head = self.held_labels.head
        if head is not None:
            self.next_label_offset = head[0]

    # ------------------------------------------------------------- terminal stage
    def _collect_updates(self) -> None:
        """Take this partition's terminal updates out of the (actor-wide) outbox."""
        for collected, taken in zip(self._updates, self.broadcast.table.take_updates(), strict=True):
            collected.extend(taken)

    def progress_ms(self, transactions_caught_up: bool, labels_caught_up: bool) -> int:
        """Every transaction and label of this partition before this event time is accounted for.

        Exact for streams in event-time order; a caught-up partition is idle
        and holds nobody back (as in Flink). Events inside the lateness that
        arrive after their bucket was read make the terminal counts eventually
        consistent rather than exact.
        """
        if self.held:  # everything before the first held transaction was scored
            tx = int(self.held[0][1].event_time)
        else:
            tx = IDLE if transactions_caught_up else self.engine.max_event_time_ms
        labels = self.held_labels.head_ms
        if labels is None:
            labels = IDLE if labels_caught_up else self.label_clock
        return min(tx, labels)

    def terminal_deltas(self, through_ms: int, stage_partitions: int) -> list[DeltaBatch]:
        """Fold the collected updates into this partition's share; one batch per stage partition."""
        transactions, frauds, days = self._updates
        self._updates = ([], [], [])
        retention = max(self.engine.terminal_retention_ms, 0)
        self.share.table.expire(self.engine.watermark_ms - retention)
        return self.share.absorb(transactions, frauds, through_ms, stage_partitions, days)

    # ------------------------------------------------------------------ checkpoint
    def checkpoint(self) -> tuple[dict[str, bytes], PartitionCheckpointMeta]:
        """(blobs, meta): the state and the offsets it corresponds to (the store keeps ``meta.to_store()``)."""
        snapshot = self.snapshot()
        return snapshot.blobs(), snapshot.meta

    def snapshot(self) -> PartitionSnapshot:
        """The state as immutable parts, taken now; encoding them (:meth:`PartitionSnapshot.blobs`)
        may run in another thread while this processor goes on."""
        meta = PartitionCheckpointMeta(
            format=CHECKPOINT_FORMAT,
            partition=self.partition,
            transactions_topic=self.transactions_topic,
            labels_topic=self.labels_topic,
            next_offset=self.next_offset,
            next_label_offset=self.next_label_offset,
            feature_version=self.engine.registry.version,
            model_versions=dict(self.scorer.model_versions),
            max_event_time_ms=self.engine.max_event_time_ms,
            label_clock=self.label_clock,
            counters=replace(self.counters),  # a copy: the processor goes on counting
        )
        return PartitionSnapshot(freeze_engine(self.engine), self.scorer.state_bytes(),
                                 terminal_copies(self.share.table), meta)

    @classmethod
    def restore(
        cls, settings: Settings, partition: int, broadcast: BroadcastRisk, blobs: dict[str, bytes],
        meta: PartitionCheckpointMeta,
    ) -> PartitionProcessor:
        """A processor in exactly the state a checkpoint recorded (held labels are re-read from Kafka)."""
        engine = restore_engine(settings.features, EngineSnapshot.from_bytes(blobs["features"]), broadcast.table)
        scorer = Scorer.from_state(settings.scoring, engine.registry, blobs["scorer"])
        share_table = terminal_from_batches(
            settings.features,
            read_ipc_batch(blobs["terminal_buckets"], TERMINAL_BUCKETS_SCHEMA),
            read_ipc_batch(blobs["terminal_frauds"], TERMINAL_FRAUDS_SCHEMA),
            read_ipc_batch(blobs["terminal_days"], TERMINAL_DAYS_SCHEMA),
        )
        share = SourceShare(share_table, partition)
        processor = cls(settings, partition, broadcast, engine=engine, scorer=scorer, share=share)
        processor.label_clock = UNKNOWN if meta.label_clock is None else meta.label_clock
        processor.next_offset = meta.next_offset
        processor.next_label_offset = meta.next_label_offset
        processor.counters = replace(meta.counters)
        return processor

    def entity_state_digest(self) -> str:
        """A digest of the feature state (accounts and pending labels), to compare two runs."""
        snapshot = take_snapshot(self.engine)
        digest = hashlib.blake2b(digest_size=16)
        for batch in (snapshot.accounts, snapshot.pending):
            table = batch.sort_by([(batch.schema.names[0], "ascending")]) if batch.num_rows else batch
            for column in table.columns:
                digest.update(repr(column.to_pylist()).encode())
        return digest.hexdigest()
