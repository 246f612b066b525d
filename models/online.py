"""An online classifier learned from delayed labels: River's logistic regression, scored a micro-batch at a time.

Labels arrive hours to weeks after their transaction (a customer call, a
chargeback). To learn from one, the model needs the input vector that
transaction was scored with, so :class:`VectorBuffer` keeps, per scored
transaction, its standardised input vector (float32 rows of one preallocated
ring array, a dict transaction id -> slot) until its label comes or it falls
out of the bounds: ``scoring.online.buffer_max`` (a label is learned only while
its transaction is among the last ``buffer_max`` this partition scored; the
oldest are evicted first) and ``scoring.online.buffer_ttl_days`` of event
time. A label found there is learned with River's ``learn_one`` (frauds weigh
``fraud_weight``) and its vector dropped; a label for an unknown, evicted or
expired transaction is counted, not an error.

The model of record is a real ``river.linear_model.LogisticRegression`` (SGD);
scoring never calls it per event: its weights and intercept are mirrored into
numpy after each learning call, and a micro-batch is scored as
``sigmoid(X @ w + b)``. Inputs: signed ``log1p`` of each feature, standardised
by the running mean and standard deviation of every row seen so far (learned
after scoring, like the anomaly model's scaler; standard deviation floored at
``STD_FLOOR``), clipped to ``[-CLIP, CLIP]`` and rounded to float32 *before*
scoring, so the vector a label teaches is bit for bit the one its transaction
was scored with. The fraud probability maps onto the fused scale like the batch
classifier's (:class:`~models.calibration.ProbabilityScale`); the score stays
0 until ``min_fraud_labels`` fraud labels were learned.

The transaction ids and event times come with the batch
(``FeatureBatch.extra[TRANSACTION_ID]`` and ``[EVENT_TIME]``); a batch without
them is scored but not buffered (counted as ``unbuffered``).

>>> from configs import FeatureSettings, OnlineSettings
>>> from features import FeatureBatch, FeatureRegistry
>>> registry = FeatureRegistry.from_settings(FeatureSettings())
>>> source = OnlineClassifierSource(OnlineSettings(features=("amount", "count_1h"), min_fraud_labels=1,
...                                                buffer_max=10), registry, review_threshold=0.995,
...                                                block_threshold=0.9995)
>>> source.version
'river.LogisticRegression:sgd0.01fw1m1b10t45:f2-43600cee'
>>> def batch(amounts, ids=None, time=0):
...     values = np.zeros((len(amounts), len(registry))); values[:, registry.index("amount")] = amounts
...     extra = {} if ids is None else {TRANSACTION_ID: np.array(ids, object), EVENT_TIME: np.full(len(ids), time)}
...     return FeatureBatch(values, np.zeros(len(amounts), bool), registry.names, registry.version, extra)
>>> warm_up = batch(np.random.default_rng(0).lognormal(3.0, 1.0, 1_000))  # no ids: scored, not buffered
>>> bool(source.process(warm_up).score.any())
False
>>> source.process(batch([20.0, 900.0], ["t1", "t2"], time=1_000)).score.tolist()  # no fraud label learned yet
[0.0, 0.0]
>>> source.observe_labels(["t2", "t1", "t9"], [True, False, True])  # t9 was never scored here
2
>>> counters = source.counters()
>>> counters["frauds_learned"], counters["labels_unknown"], counters["unbuffered"], len(source.buffer)
(1, 1, 1000, 0)
>>> low, high = source.process(batch([20.0, 900.0], ["t3", "t4"], time=2_000)).score
>>> bool(high > low)
True
"""

from __future__ import annotations

import math
import zlib
from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from river import linear_model, optim, utils

from configs import OnlineSettings
from features import FeatureBatch, FeatureRegistry
from models.calibration import ProbabilityScale
from models.preprocessing import RecentMoments, signed_log1p
from models.sources import STD_FLOOR, SourceScores, SourceState, source_features
from models.state import pack, unpack

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

#: ``FeatureBatch.extra`` key of the rows' transaction ids (str), and of their event times (epoch ms, int64).
TRANSACTION_ID = "transaction_id"
EVENT_TIME = "event_time"
#: Standardised inputs are clipped to this many standard deviations (an outlier must not dominate an SGD step).
CLIP = 5.0
#: Rows the scaler must have seen before scored vectors are buffered (earlier ones are scaled by almost nothing).
SCALER_WARMUP = 1_000
#: Expired vectors are swept out each time the event-time clock crosses a multiple of this (labels check exactly).
SWEEP_MS = 3_600_000
#: Logits beyond this are clipped before the sigmoid (no overflow; the probability is 0 or 1 to float precision).
_MAX_LOGIT = 40.0
_NO_CLOCK = -(2**62)


def _number(value: float) -> str:
    """A float for a version string: exact, without a trailing ``.0``."""
    return repr(float(value)).removesuffix(".0")


def _sigmoid(logit: FloatArray) -> FloatArray:
    result: FloatArray = 1.0 / (1.0 + np.exp(-np.clip(logit, -_MAX_LOGIT, _MAX_LOGIT)))
    return result


class VectorBuffer:
    """Input vectors of scored transactions awaiting their labels: a float32 ring and a dict id -> slot.

    Row ``k`` written goes to slot ``k mod capacity``; a slot still holding a
    vector (no label came) is evicted when the ring comes round to it, so a
    vector waits for at most ``capacity`` later rows. ``take`` refuses vectors
    older than ``ttl_ms`` behind the event-time clock (the latest event time
    added); they are also swept out every ``SWEEP_MS`` of event time. An id
    added again replaces its older vector.

    >>> buffer = VectorBuffer(capacity=3, width=1, ttl_ms=10_000)
    >>> buffer.add(np.array([[1.0], [2.0], [3.0], [4.0]], np.float32), ["a", "b", "c", "d"], np.array([0, 1, 2, 3]))
    >>> buffer.evicted, buffer.take("a"), buffer.take("d").tolist(), len(buffer)  # "d" took the slot of "a"
    (1, None, [4.0], 2)
    >>> buffer.add(np.array([[5.0]], np.float32), ["e"], np.array([10_003]))  # takes the slot of "b"
    >>> buffer.take("c"), buffer.evicted, buffer.expired, buffer.unknown  # "c" is more than 10 s old now
    (None, 2, 1, 1)
    """

    def __init__(self, capacity: int, width: int, ttl_ms: int) -> None:
        self.capacity = capacity
        self.width = width
        self.ttl_ms = ttl_ms
        self.vectors = np.zeros((capacity, width), dtype=np.float32)
        self.times = np.zeros(capacity, dtype=np.int64)
        self.live = np.zeros(capacity, dtype=bool)
        self.ids = np.empty(capacity, dtype=object)
        self.index: dict[str, int] = {}
        #: Slot the next row goes to; latest event time added; when the next sweep is due.
        self.head = 0
        self.clock = _NO_CLOCK
        self.next_sweep = _NO_CLOCK
        #: Rows added; vectors evicted unlabelled (ring came round), expired (TTL), replaced (id added again).
        self.added = 0
        self.evicted = 0
        self.expired = 0
        self.replaced = 0
        #: Lookups for ids not (or no longer) held; vectors handed out.
        self.unknown = 0
        self.taken = 0

    def __len__(self) -> int:
        return len(self.index)

    def add(self, vectors: npt.NDArray[np.float32], ids: Sequence[str], times: IntArray) -> None:
        """Hold these rows' vectors under their ids (rows in scoring order)."""
        for start in range(0, len(ids), self.capacity):
            end = start + self.capacity
            self._add(vectors[start:end], list(ids[start:end]), np.asarray(times[start:end], dtype=np.int64))
        if len(ids):
            self.clock = max(self.clock, int(np.max(times)))
            if self.clock >= self.next_sweep:
                self.sweep()

    def _add(self, vectors: npt.NDArray[np.float32], ids: list[str], times: IntArray) -> None:
        n = len(ids)  # at most capacity: the rows fill ring[head:] and then maybe ring[:rest]
        index = self.index
        first = min(n, self.capacity - self.head)
        for lo, hi, row in ((self.head, self.head + first, 0), (0, n - first, first)):
            if hi <= lo:
                continue
            held = self.live[lo:hi]
            if held.any():  # the ring came round to vectors no label took: evict them
                evicted = self.ids[lo:hi][held].tolist()
                deque(map(index.pop, evicted), maxlen=0)
                self.evicted += len(evicted)
            self.vectors[lo:hi] = vectors[row : row + hi - lo]
            self.times[lo:hi] = times[row : row + hi - lo]
            held[:] = True
            self.ids[lo:hi] = ids[row : row + hi - lo]
        slot_list = [*range(self.head, self.head + first), *range(n - first)]
        if index.keys().isdisjoint(ids):
            size = len(index)
            index.update(zip(ids, slot_list))
            if len(index) != size + n:  # an id twice in these rows: the later row wins
                for tid, slot in zip(ids, slot_list):
                    if index[tid] != slot:
                        self._drop(slot)
                        self.replaced += 1
        else:
            for tid, slot in zip(ids, slot_list):
                old = index.get(tid)
                if old is not None:
                    self._drop(old)
                    self.replaced += 1
                index[tid] = slot
        self.head = (self.head + n) % self.capacity
        self.added += n

    def _drop(self, slot: int) -> None:
        self.live[slot] = False
        self.ids[slot] = None

    def take(self, transaction_id: str) -> npt.NDArray[np.float32] | None:
        """The vector held for this id, removed from the buffer; None (counted) when unknown or expired."""
        slot = self.index.pop(transaction_id, None)
        if slot is None:
            self.unknown += 1
            return None
        self._drop(slot)
        if self.times[slot] < self.clock - self.ttl_ms:
            self.expired += 1
            return None
        self.taken += 1
        vector: npt.NDArray[np.float32] = self.vectors[slot].copy()
        return vector

    def sweep(self) -> int:
        """Drop the vectors older than the TTL behind the clock; how many."""
        self.next_sweep = (self.clock // SWEEP_MS + 1) * SWEEP_MS
        old = np.flatnonzero(self.live & (self.times < self.clock - self.ttl_ms))
        if len(old):
            deque(map(self.index.pop, self.ids[old].tolist()), maxlen=0)
            self.live[old] = False
            self.ids[old] = None
            self.expired += len(old)
        return len(old)

    _COUNTERS = ("added", "evicted", "expired", "replaced", "unknown", "taken")

    def state(self) -> dict[str, Any]:
        """The held vectors (slot, vector, event time, id; in slot order), ring position, clock and counters."""
        slots = np.flatnonzero(self.live)
        ids: list[str] = self.ids[slots].tolist()
        joined = "".join(ids)
        if joined.isascii():
            data, lengths = joined.encode("ascii"), np.fromiter(map(len, ids), dtype=np.int32, count=len(ids))
        else:
            encoded = [tid.encode() for tid in ids]
            data = b"".join(encoded)
            lengths = np.fromiter(map(len, encoded), dtype=np.int32, count=len(ids))
        return {
            "slots": slots.astype(np.int32),
            "vectors": self.vectors[slots],
            "times": self.times[slots],
            "id_bytes": np.frombuffer(data, dtype=np.uint8),
            "id_lengths": lengths,
            "head": self.head,
            "clock": self.clock,
            "next_sweep": self.next_sweep,
            **{name: getattr(self, name) for name in self._COUNTERS},
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state` of a buffer of the same capacity and width."""
        slots = np.asarray(state["slots"], dtype=np.intp)
        vectors = np.asarray(state["vectors"], dtype=np.float32).reshape(len(slots), self.width)
        if len(slots) and int(slots.max()) >= self.capacity:
            raise ValueError(f"the saved buffer has slot {int(slots.max())}, this one holds {self.capacity}")
        data = np.asarray(state["id_bytes"], dtype=np.uint8).tobytes()
        ends = np.cumsum(np.asarray(state["id_lengths"], dtype=np.int64)).tolist()
        ids = [data[a:b].decode() for a, b in zip([0, *ends[:-1]], ends)]
        self.vectors[:] = 0.0
        self.times[:] = 0
        self.live[:] = False
        self.ids[:] = None
        self.vectors[slots] = vectors
        self.times[slots] = np.asarray(state["times"], dtype=np.int64)
        self.live[slots] = True
        self.ids[slots] = ids
        self.index = dict(zip(ids, slots.tolist()))
        self.head = int(state["head"])
        self.clock = int(state["clock"])
        self.next_sweep = int(state["next_sweep"])
        for name in self._COUNTERS:
            setattr(self, name, int(state[name]))


class OnlineClassifierSource:
    """River logistic regression on standardised signed-log1p features, learned from delayed labels.

    Scores every row with the weights at the batch start (numpy), then learns
    the batch's scaling and holds the rows' vectors for their labels;
    :meth:`observe_labels` learns the labels (River ``learn_one``). The
    explanation of a row: per feature, its contribution ``w_j * x_j`` to the
    log-odds, as at the batch start.
    """

    name = "online"

    def __init__(
        self, settings: OnlineSettings, registry: FeatureRegistry, review_threshold: float, block_threshold: float
    ) -> None:
        names = source_features(settings.features, registry, "scoring.online.features")
        self.settings = settings
        self.features = tuple(names)
        self.columns: IntArray = np.array([registry.index(n) for n in names], dtype=np.int64)
        self.learning_rate = settings.learning_rate
        self.fraud_weight = settings.fraud_weight
        self.min_fraud_labels = settings.min_fraud_labels
        shape = (f"sgd{_number(settings.learning_rate)}fw{_number(settings.fraud_weight)}"
                 f"m{settings.min_fraud_labels}b{settings.buffer_max}t{_number(settings.buffer_ttl_days)}")  # fmt: skip
        self.version = f"river.LogisticRegression:{shape}"
        if settings.features:  # a subset: its size and a CRC of the names
            self.version += f":f{len(names)}-{zlib.crc32(','.join(names).encode()):08x}"
        self.scale = ProbabilityScale(settings.review_probability, settings.block_probability,
                                      review_threshold, block_threshold)  # fmt: skip
        self.scaler = RecentMoments(len(names), half_life=math.inf)  # running mean/std of every row seen
        self.buffer = VectorBuffer(settings.buffer_max, len(names), int(settings.buffer_ttl_days * 86_400_000))
        self.model = self._new_river()
        self.weights_: FloatArray = np.zeros(len(names))
        self.intercept_ = 0.0
        #: Labels learned, by class; scored rows not buffered (no ids in the batch, or the scaler's warm-up).
        self.frauds_learned = 0
        self.genuine_learned = 0
        self.unbuffered = 0

    def _new_river(self) -> linear_model.LogisticRegression:
        return linear_model.LogisticRegression(
            optimizer=optim.SGD(self.learning_rate), intercept_lr=self.learning_rate
        )

    # ------------------------------------------------------------------ scoring
    def transform(self, values: FloatArray) -> npt.NDArray[np.float32]:
        """Registry-ordered rows as the model sees them now: signed log1p, standardised, clipped, float32."""
        logged = signed_log1p(values[:, self.columns])
        return self._standardise(logged)

    def _standardise(self, logged: FloatArray) -> npt.NDArray[np.float32]:
        mean, std = self.scaler.mean_, np.maximum(self.scaler.std(), STD_FLOOR)
        return np.clip((logged - mean) / std, -CLIP, CLIP).astype(np.float32)

    @property
    def warm(self) -> bool:
        """True once ``min_fraud_labels`` fraud labels were learned (before, the score is 0)."""
        return self.frauds_learned >= self.min_fraud_labels

    def probability(self, x: npt.NDArray[np.float32]) -> FloatArray:
        """The model's fraud probability of standardised rows (from :meth:`transform`), with the current weights."""
        return _sigmoid(x.astype(np.float64) @ self.weights_ + self.intercept_)

    def process(self, batch: FeatureBatch) -> SourceScores:
        logged = signed_log1p(batch.values[:, self.columns])
        x = self._standardise(logged)
        rows = len(x)
        explain = None
        if self.warm and rows:
            p = self.probability(x)
            score, action = self.scale.score(p), self.scale.action(p)
            weights, columns = self.weights_, self.columns  # replaced, never changed in place, by learning

            def explain(chosen: npt.NDArray[np.int64]) -> tuple[IntArray, FloatArray]:
                return columns, x[chosen].astype(np.float64) * weights

        else:
            score, action = np.zeros(rows), np.zeros(rows, dtype=np.int8)
        if rows:
            extra = batch.extra
            if TRANSACTION_ID in extra and EVENT_TIME in extra and self.scaler.weight_ >= SCALER_WARMUP:
                ids = extra[TRANSACTION_ID]
                self.buffer.add(x, ids.tolist() if isinstance(ids, np.ndarray) else list(ids), extra[EVENT_TIME])
            else:
                self.unbuffered += rows
            self.scaler.learn(logged)
        return SourceScores(score, action, explain=explain)

    # ----------------------------------------------------------------- learning
    def observe_labels(self, transaction_ids: Sequence[str], is_fraud: Sequence[bool]) -> int:
        """Learn each label whose transaction's vector is still held (in order); how many were learned."""
        learned = 0
        model, features, fraud_weight = self.model, self.features, self.fraud_weight
        for transaction_id, fraud in zip(transaction_ids, is_fraud, strict=True):
            vector = self.buffer.take(transaction_id)
            if vector is None:
                continue
            fraud = bool(fraud)
            model.learn_one(dict(zip(features, vector.tolist())), fraud, fraud_weight if fraud else 1.0)
            learned += 1
            if fraud:
                self.frauds_learned += 1
            else:
                self.genuine_learned += 1
        if learned:
            self._mirror()
        return learned

    def _mirror(self) -> None:
        """Copy the River model's weights and intercept into the numpy arrays scoring uses."""
        weights = self.model.weights
        self.weights_ = np.array([weights.get(name, 0.0) for name in self.features], dtype=np.float64)
        self.intercept_ = float(self.model.intercept)

    def to_river(self) -> linear_model.LogisticRegression:
        """The River model of record (give it :meth:`river_features` of a row)."""
        return self.model

    def river_features(self, values: FloatArray) -> dict[str, float]:
        """One row of registry-ordered feature values as the River model sees it now (``predict_proba_one``)."""
        return dict(zip(self.features, self.transform(values[None, :])[0].tolist(), strict=True))

    def snapshot_bytes(self) -> bytes:
        """The learned model (weights, intercept, scaler, label counts) without the held vectors: what is
        logged to MLflow as a version of ``fraud-online``; :meth:`from_snapshot` reads it back."""
        empty = VectorBuffer(self.buffer.capacity, self.buffer.width, self.buffer.ttl_ms).state()
        state = {**self.state(), **{f"buffer.{key}": value for key, value in empty.items()}}
        arrays = {k: v for k, v in state.items() if isinstance(v, np.ndarray)}
        scalars = {k: v for k, v in state.items() if not isinstance(v, np.ndarray)}
        return pack({"version": self.version, "features": list(self.features), "scalars": scalars}, arrays)

    @classmethod
    def from_snapshot(
        cls, settings: OnlineSettings, registry: FeatureRegistry, data: bytes, review_threshold: float,
        block_threshold: float,
    ) -> OnlineClassifierSource:
        """A source scoring with a snapshot's model (an empty label buffer); ValueError for another configuration.

        >>> from configs import FeatureSettings
        >>> registry = FeatureRegistry.from_settings(FeatureSettings())
        >>> source = OnlineClassifierSource(OnlineSettings(), registry, 0.995, 0.9995)
        >>> copy = OnlineClassifierSource.from_snapshot(OnlineSettings(), registry, source.snapshot_bytes(), 0.995, 0.9995)
        >>> copy.version == source.version and copy.weights_.tolist() == source.weights_.tolist()
        True
        """
        meta, arrays = unpack(data)
        source = cls(settings, registry, review_threshold, block_threshold)
        if meta.get("version") != source.version:
            raise ValueError(f"the snapshot is of {meta.get('version')}, the settings give {source.version}; "
                             "load it with the scoring.online settings it was learned with")
        source.restore({**arrays, **meta["scalars"]})
        return source

    def counters(self) -> dict[str, int]:
        """Monotonic counters and the buffer's size, for status and metrics."""
        buffer = self.buffer
        return {
            "buffered": len(buffer),
            "frauds_learned": self.frauds_learned,
            "genuine_learned": self.genuine_learned,
            "unbuffered": self.unbuffered,
            "evicted": buffer.evicted,
            "expired": buffer.expired,
            "replaced": buffer.replaced,
            "labels_unknown": buffer.unknown,
        }

    # -------------------------------------------------------------------- state
    def state(self) -> SourceState:
        state: SourceState = {
            "model.weights": self.weights_.copy(),
            "model.intercept": np.array([self.intercept_]),
            "model.iterations": int(self.model.optimizer.n_iterations),
            "frauds_learned": self.frauds_learned,
            "genuine_learned": self.genuine_learned,
            "unbuffered": self.unbuffered,
        }
        state.update({f"scaler.{key}": value for key, value in self.scaler.state().items()})
        state.update({f"buffer.{key}": value for key, value in self.buffer.state().items()})
        return state

    def restore(self, state: SourceState) -> None:
        weights = np.asarray(state["model.weights"], dtype=np.float64)
        if weights.shape != (len(self.features),):
            raise ValueError(f"the saved online model has {weights.size} weights, this one {len(self.features)}")
        self.model = self._new_river()
        iterations = int(state["model.iterations"])
        if iterations:  # River's weights hold every feature once a row was learned
            self.model._weights = utils.VectorDict(dict(zip(self.features, weights.tolist())))
        self.model.intercept = float(np.asarray(state["model.intercept"])[0])
        self.model.optimizer.n_iterations = iterations
        self._mirror()
        self.frauds_learned = int(state["frauds_learned"])
        self.genuine_learned = int(state["genuine_learned"])
        self.unbuffered = int(state["unbuffered"])
        for prefix, part in (("scaler.", self.scaler), ("buffer.", self.buffer)):
            part.restore({k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)})

