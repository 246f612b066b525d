"""models/online.py: a River logistic regression learned from delayed labels, scored in batches, checkpointed."""

from __future__ import annotations

from collections.abc import Iterator

import msgspec
import numpy as np
import pytest
from river import linear_model, optim

from configs import ConfigError, OnlineSettings, ScoringSettings
from configs.settings import settings_from_dict
from features import FeatureBatch, FeatureRegistry
from models import Scorer
from models.online import (
    EVENT_TIME,
    SCALER_WARMUP,
    SWEEP_MS,
    TRANSACTION_ID,
    OnlineClassifierSource,
    VectorBuffer,
)
from models.sources import LabelLearner
from tests.models.conftest import Generated

DAY_MS = 86_400_000
#: Rows of the generated history are spaced this far apart in event time (41k rows: about 2 weeks).
STEP_MS = 30_000


def _source(registry: FeatureRegistry, **changes: object) -> OnlineClassifierSource:
    return OnlineClassifierSource(msgspec.structs.replace(OnlineSettings(), **changes), registry, 0.995, 0.9995)


def _batch(registry: FeatureRegistry, values: np.ndarray, first: int, times: np.ndarray | None = None) -> FeatureBatch:
    """Rows with ids t<first>, t<first+1>, ... and event times ``first * STEP_MS`` on (unless given)."""
    ids = np.array([f"t{i}" for i in range(first, first + len(values))], dtype=object)
    if times is None:
        times = np.arange(first, first + len(values), dtype=np.int64) * STEP_MS
    extra = {TRANSACTION_ID: ids, EVENT_TIME: np.asarray(times, dtype=np.int64)}
    return FeatureBatch(values, np.zeros(len(values), bool), registry.names, registry.version, extra)


def _stream(
    generated: Generated, start: int, stop: int, size: int = 500, delay_batches: int = 2
) -> Iterator[tuple[int, np.ndarray, tuple[list[str], list[bool]]]]:
    """(first row, rows, labels due after them): every fraud and one genuine row in ten is labelled,
    ``delay_batches`` batches after it was scored."""
    for first in range(start, stop, size):
        rows = generated.values[first : min(first + size, stop)]
        labelled_from = first - delay_batches * size
        ids, fraud = [], []
        if labelled_from >= 0:
            for i in range(labelled_from, labelled_from + size):
                if generated.is_fraud[i] or i % 10 == 0:
                    ids.append(f"t{i}")
                    fraud.append(bool(generated.is_fraud[i]))
        yield first, rows, (ids, fraud)


def _learn(source: OnlineClassifierSource, generated: Generated, registry: FeatureRegistry, stop: int) -> None:
    """Score rows 0..stop in micro-batches, the labels following two batches behind (as :func:`_stream`)."""
    for first, rows, labels in _stream(generated, 0, stop):
        source.process(_batch(registry, rows, first))
        source.observe_labels(*labels)


def _pattern(registry: FeatureRegistry, rows: np.ndarray) -> np.ndarray:
    """A fraud pattern the generated frauds do not show: a large payment after a day of silence, yet five distinct
    merchants in the last day, at a terminal without reported fraud (ordinary rows otherwise). Terminal fraud
    itself is no longer foreign to the stream: victims report compromised terminals while they still are."""
    out = rows.copy()
    pattern = (("amount", 900.0), ("seconds_since_prev", 86_400.0), ("distinct_merchants_24h", 5.0),
               ("terminal_fraud_rate", 0.0))  # fmt: skip
    for name, value in pattern:
        out[:, registry.index(name)] = value
    return out


def _keyed(registry: FeatureRegistry, values: np.ndarray, ids: list[str], time_ms: int) -> FeatureBatch:
    extra = {TRANSACTION_ID: np.array(ids, dtype=object), EVENT_TIME: np.full(len(ids), time_ms, dtype=np.int64)}
    return FeatureBatch(values, np.zeros(len(values), bool), registry.names, registry.version, extra)


# --------------------------------------------------------------------------------------------------- learning
def test_labels_of_a_repeated_fraud_pattern_raise_its_score_and_genuine_rows_stay_low(
    generated: Generated, registry: FeatureRegistry
) -> None:
    """Measured (seed 13 history, default settings but no warm-up gate): the pattern's mean score goes from
    0.120 to 0.986 after 601 fraud labels; 2,000 unseen genuine rows: mean 0.084 before, 0.098 after
    (99th percentile 0.38 before, 0.50 after; none at the review threshold)."""
    source = _source(registry, min_fraud_labels=0)
    # 20k events of the generated stream: its frauds and one genuine row in ten labelled, two batches late
    _learn(source, generated, registry, 20_000)
    genuine = np.flatnonzero(~generated.is_fraud)
    probe_genuine = generated.values[genuine[36_000:38_000]]
    now = 20_000 * STEP_MS

    def mean_score(rows: np.ndarray, name: str) -> np.ndarray:
        return source.process(_keyed(registry, rows, [f"{name}{i}" for i in range(len(rows))], now)).score

    before = mean_score(_pattern(registry, generated.values[genuine[35_000:35_200]]), "probe-a").mean()
    genuine_before = mean_score(probe_genuine, "probe-b")
    # 20 more batches of the stream, each with 25 rows of the pattern; all of them are reported as fraud, late
    pending: list[tuple[list[str], list[bool]]] = []
    for k, (first, rows, labels) in enumerate(_stream(generated, 20_000, 29_500, size=475)):
        pattern = _pattern(registry, generated.values[genuine[34_000 + 25 * k : 34_025 + 25 * k]])
        ids = [f"t{first + i}" for i in range(len(rows))] + [f"p{k}-{i}" for i in range(25)]
        source.process(_keyed(registry, np.vstack([rows, pattern]), ids, first * STEP_MS))
        source.observe_labels(*labels)
        pending.append(([f"p{k}-{i}" for i in range(25)], [True] * 25))
        if len(pending) > 2:
            source.observe_labels(*pending.pop(0))
    after = mean_score(_pattern(registry, generated.values[genuine[35_200:35_400]]), "probe-c").mean()
    genuine_after = mean_score(probe_genuine, "probe-d")
    assert before < 0.2 and after > 0.9 and after - before > 0.7, (before, after)
    assert genuine_before.mean() < 0.1 and genuine_after.mean() < 0.1, (genuine_before.mean(), genuine_after.mean())
    assert np.quantile(genuine_after, 0.99) < 0.6 and (genuine_after >= 0.995).mean() < 0.005
    # every label was learned but those of the rows scored during the scaler's warm-up (not buffered)
    warm_up_labels = int((generated.is_fraud[:SCALER_WARMUP] | (np.arange(SCALER_WARMUP) % 10 == 0)).sum())
    assert source.frauds_learned > 450 and source.counters()["labels_unknown"] == warm_up_labels


def test_the_river_model_learned_exactly_what_a_plain_river_model_fed_the_same_labels_learns(
    generated: Generated, registry: FeatureRegistry
) -> None:
    source = _source(registry, min_fraud_labels=0, buffer_max=5_000)
    rate = source.learning_rate
    plain = linear_model.LogisticRegression(optimizer=optim.SGD(rate), intercept_lr=rate)
    taught = 0
    for first, rows, (ids, fraud) in _stream(generated, 0, 12_000):
        batch = _batch(registry, rows, first)
        expected = source.transform(rows)  # the vectors the rows are scored with: the scaler at the batch start
        buffered = source.scaler.weight_ >= SCALER_WARMUP
        scored = source.process(batch)
        np.testing.assert_array_equal(scored.score, source.scale.score(source.probability(expected)))
        if buffered:  # exactly the scored vectors wait for the labels
            slots = [source.buffer.index[f"t{first + i}"] for i in range(len(rows))]
            np.testing.assert_array_equal(source.buffer.vectors[slots], expected)
        now = 0
        for tid, y in zip(ids, fraud, strict=True):  # the plain model gets the vector the label's row was scored with
            slot = source.buffer.index.get(tid)
            if slot is not None:
                plain.learn_one(dict(zip(source.features, source.buffer.vectors[slot].tolist())), y, 1.0)
                now += 1
        assert source.observe_labels(ids, fraud) == now
        taught += now
    assert taught > 1_000 and source.frauds_learned > 20
    river = source.to_river()
    assert river.weights == plain.weights and river.intercept == plain.intercept
    assert source.weights_.tolist() == [plain.weights[name] for name in source.features]
    # batch scores are River's own predict_proba_one of the row as it sees it
    later = np.arange(12_000, len(generated.values))  # the next rows, and the next frauds (a window may hold none)
    rows = generated.values[np.concatenate([later[:300], later[generated.is_fraud[later]][:20]])]
    mine = source.probability(source.transform(rows))
    theirs = np.array([river.predict_proba_one(source.river_features(row))[True] for row in rows])
    np.testing.assert_allclose(mine, theirs, rtol=0, atol=1e-12)
    assert mine.max() > 0.5 > mine.min()


def test_no_score_and_no_alert_before_the_warm_up_number_of_fraud_labels(
    generated: Generated, registry: FeatureRegistry
) -> None:
    source = _source(registry, min_fraud_labels=5)
    genuine = np.flatnonzero(~generated.is_fraud)[:3_000]
    source.process(_batch(registry, generated.values[genuine[:1_000]], 0))  # the scaler's warm-up: not buffered
    source.process(_batch(registry, generated.values[genuine[1_000:]], 1_000))
    frauds = _pattern(registry, generated.values[genuine[:6]])
    source.process(_batch(registry, frauds, 10_000))
    assert source.observe_labels([f"t{i}" for i in range(1_000, 1_300)], [False] * 300) == 300  # genuine don't count
    source.observe_labels([f"t{10_000 + i}" for i in range(4)], [True] * 4)
    probe = _pattern(registry, generated.values[genuine[100:200]])
    cold = source.process(_batch(registry, probe, 20_000))
    assert not cold.score.any() and not cold.action.any() and cold.explain is None and not source.warm
    source.observe_labels(["t10004"], [True])
    warm = source.process(_batch(registry, probe, 30_000))
    assert source.warm and warm.score.min() > 0.0 and warm.explain is not None


def test_explanation_is_each_features_share_of_the_log_odds_at_the_batch_start(
    generated: Generated, registry: FeatureRegistry
) -> None:
    source = _source(registry, min_fraud_labels=0)
    _learn(source, generated, registry, 8_000)
    rows = generated.values[8_000:8_200]
    x, weights, intercept = source.transform(rows), source.weights_.copy(), source.intercept_
    probability = source.probability(x)
    scored = source.process(_batch(registry, rows, 8_000))
    assert source.observe_labels([f"t{8_000 + i}" for i in range(50)], [True] * 50) == 50  # learning after the batch
    assert not np.array_equal(source.weights_, weights)
    assert scored.explain is not None
    chosen = np.array([0, 5, 199])
    columns, contribution = scored.explain(chosen)
    assert [registry.names[c] for c in columns] == list(OnlineSettings().features)
    np.testing.assert_array_equal(contribution, x[chosen].astype(np.float64) * weights)
    # the contributions and the intercept add up to the log-odds the row was scored with
    np.testing.assert_allclose(1.0 / (1.0 + np.exp(-(contribution.sum(axis=1) + intercept))), probability[chosen],
                               rtol=0, atol=1e-12)  # fmt: skip


# ----------------------------------------------------------------------------------------------------- buffer
def test_buffer_holds_the_last_buffer_max_rows_and_counts_evictions_and_unknown_labels(
    generated: Generated, registry: FeatureRegistry
) -> None:
    source = _source(registry, buffer_max=1_000, min_fraud_labels=0)
    source.process(_batch(registry, generated.values[:SCALER_WARMUP], 0))  # scaler warm-up: scored, not buffered
    assert source.unbuffered == SCALER_WARMUP and len(source.buffer) == 0
    source.process(_batch(registry, generated.values[1_000:1_700], 1_000))
    source.process(_batch(registry, generated.values[1_700:2_500], 1_700))
    assert len(source.buffer) == 1_000 and source.buffer.evicted == 500
    assert source.buffer.vectors.shape == (1_000, len(source.features)) and source.buffer.vectors.dtype == np.float32
    # t1000..t1499 were evicted (oldest first), t500 was never buffered, t9999999 never scored here
    learned = source.observe_labels(["t1000", "t1499", "t500", "t9999999", "t1500", "t2499"], [True, False] * 3)
    counters = source.counters()
    assert learned == 2 and counters["labels_unknown"] == 4 and counters["evicted"] == 500
    assert source.frauds_learned == 1 and source.genuine_learned == 1 and len(source.buffer) == 998
    assert source.observe_labels(["t1500"], [True]) == 0 and source.counters()["labels_unknown"] == 5  # taken once
    # the ring's next slot is the one t1500 (labelled) had: reused without evicting anybody
    source.process(_batch(registry, generated.values[2_500:2_501], 2_500))
    assert source.buffer.evicted == 500 and len(source.buffer) == 999
    source.process(_batch(registry, generated.values[2_501:2_502], 2_501))  # t1501's slot: evicted
    assert source.buffer.evicted == 501 and len(source.buffer) == 999 and "t1501" not in source.buffer.index


def test_ring_reuses_labelled_slots_and_evicts_only_unlabelled_ones() -> None:
    buffer = VectorBuffer(capacity=4, width=2, ttl_ms=DAY_MS)
    rows = np.arange(8, dtype=np.float32).reshape(4, 2)
    buffer.add(rows, ["a", "b", "c", "d"], np.zeros(4, np.int64))
    assert buffer.take("a") is not None and buffer.take("c") is not None
    buffer.add(rows[:2], ["e", "f"], np.ones(2, np.int64))  # into the slots of "a" (free) and "b" (evicted)
    assert buffer.evicted == 1 and sorted(buffer.index) == ["d", "e", "f"]
    assert buffer.take("b") is None and buffer.unknown == 1
    # more rows in one call than the ring holds: only the last ``capacity`` stay
    buffer.add(np.zeros((9, 2), np.float32), [f"x{i}" for i in range(9)], np.full(9, 2, np.int64))
    assert sorted(buffer.index) == [f"x{i}" for i in range(5, 9)] and buffer.evicted == 1 + 3 + 5
    assert int(buffer.live.sum()) == len(buffer) == 4


def test_an_id_scored_again_replaces_its_older_vector() -> None:
    buffer = VectorBuffer(capacity=10, width=1, ttl_ms=DAY_MS)
    buffer.add(np.array([[1.0], [2.0]], np.float32), ["a", "b"], np.zeros(2, np.int64))
    buffer.add(np.array([[3.0], [4.0], [5.0]], np.float32), ["a", "c", "c"], np.ones(3, np.int64))
    assert buffer.replaced == 2 and len(buffer) == 3 and int(buffer.live.sum()) == 3
    assert buffer.take("a").tolist() == [3.0] and buffer.take("c").tolist() == [5.0]  # type: ignore[union-attr]
    buffer.add(np.array([[6.0], [7.0], [8.0]], np.float32), ["p", "q", "p"], np.ones(3, np.int64))  # new ids, one twice
    assert buffer.replaced == 3 and len(buffer) == int(buffer.live.sum()) == 3
    assert buffer.take("p").tolist() == [8.0]  # type: ignore[union-attr]


def test_labels_of_transactions_older_than_the_ttl_are_not_learned_and_old_vectors_are_swept(
    generated: Generated, registry: FeatureRegistry
) -> None:
    source = _source(registry, buffer_ttl_days=2.0, min_fraud_labels=0)
    minute = 60_000
    source.process(_batch(registry, generated.values[:1_000], 0, times=np.zeros(1_000)))  # scaler warm-up
    ten_days = np.full(100, 10 * DAY_MS + 10 * minute)
    source.process(_batch(registry, generated.values[1_000:1_100], 1_000, times=ten_days))
    source.process(_batch(registry, generated.values[1_100:1_200], 1_100, times=np.full(100, 11 * DAY_MS)))
    # the clock passes a whole hour: the sweep drops what is 2 days old at 12 d 0:05 (nothing yet)
    source.process(_batch(registry, generated.values[1_200:1_201], 1_200, times=[12 * DAY_MS + 5 * minute]))
    source.process(_batch(registry, generated.values[1_201:1_202], 1_201, times=[12 * DAY_MS + 15 * minute]))
    assert len(source.buffer) == 202 and source.buffer.expired == 0
    # at 12 d 0:15, t1000..t1099 (10 d 0:10) are past the TTL: their labels are refused before any sweep
    assert source.observe_labels(["t1000", "t1100"], [True, True]) == 1
    assert source.buffer.expired == 1 and source.frauds_learned == 1 and len(source.buffer) == 200
    # the next sweep (the clock passes 12 d 1:00) drops the other 99
    source.process(_batch(registry, generated.values[1_202:1_203], 1_202, times=[12 * DAY_MS + SWEEP_MS]))
    assert source.buffer.expired == 100 and len(source.buffer) == 102
    assert source.observe_labels(["t1001"], [True]) == 0 and source.buffer.unknown == 1


def test_batches_without_ids_are_scored_but_not_buffered(generated: Generated, registry: FeatureRegistry) -> None:
    source = _source(registry)
    plain = FeatureBatch(generated.values[:2_000], np.zeros(2_000, bool), registry.names, registry.version)
    assert len(source.process(plain).score) == 2_000
    assert source.unbuffered == 2_000 and len(source.buffer) == 0


# ------------------------------------------------------------------------------------------------------ state
def _run_scorer(
    scorer: Scorer, generated: Generated, registry: FeatureRegistry, start: int, stop: int
) -> list[tuple[np.ndarray, np.ndarray, list[str | None], int]]:
    out = []
    for first, rows, labels in _stream(generated, start, stop):
        scored = scorer.process(_batch(registry, rows, first))
        learned = scorer.observe_labels(*labels)
        out.append((scored.score, scored.sources["online"], scored.decision, learned))
    return out


@pytest.mark.parametrize("cut", [2_500, 9_000])
def test_a_restored_scorer_continues_bit_identically(generated: Generated, registry: FeatureRegistry, cut: int) -> None:
    settings = ScoringSettings(online=OnlineSettings(min_fraud_labels=10, buffer_max=4_000))
    stop = 16_000
    uninterrupted = Scorer.from_settings(settings, registry)
    expected = _run_scorer(uninterrupted, generated, registry, 0, stop)
    before = Scorer.from_settings(settings, registry)
    head = _run_scorer(before, generated, registry, 0, cut)
    blob = before.state_bytes()
    restored = Scorer.from_state(settings, registry, blob)
    assert restored.state_bytes() == blob
    tail = _run_scorer(restored, generated, registry, cut, stop)
    assert len(head) + len(tail) == len(expected)
    for (score, online, decision, learned), (score2, online2, decision2, learned2) in zip(expected, head + tail):
        np.testing.assert_array_equal(score, score2)
        np.testing.assert_array_equal(online, online2)
        assert decision == decision2 and learned == learned2
    assert restored.state_bytes() == uninterrupted.state_bytes()
    mine, theirs = restored.sources[1], uninterrupted.sources[1]
    assert isinstance(mine, OnlineClassifierSource) and isinstance(theirs, OnlineClassifierSource)
    assert mine.to_river().weights == theirs.to_river().weights and mine.counters() == theirs.counters()
    # the run really learned, alerted from the online model and evicted vectors on the way
    assert theirs.warm and theirs.buffer.evicted > 0 and np.concatenate([o for _, o, _, _ in expected]).max() > 0.995


def test_state_is_arrays_and_scalars_and_holds_only_the_buffered_rows(
    generated: Generated, registry: FeatureRegistry
) -> None:
    source = _source(registry, min_fraud_labels=0)
    _learn(source, generated, registry, 3_000)
    state = source.state()
    assert all(isinstance(v, (np.ndarray, int, float, bool)) for v in state.values())
    held = len(source.buffer)
    assert state["buffer.vectors"].shape == (held, len(source.features))  # type: ignore[union-attr]
    assert state["buffer.id_lengths"].sum() == len(state["buffer.id_bytes"])  # type: ignore[union-attr]
    copy = _source(registry, min_fraud_labels=0)
    copy.restore(state)
    assert copy.buffer.index == source.buffer.index and copy.counters() == source.counters()


def test_state_saved_under_other_online_settings_is_refused(registry: FeatureRegistry) -> None:
    blob = Scorer.from_settings(ScoringSettings(), registry).state_bytes()
    for change in ({"buffer_max": 10}, {"learning_rate": 0.5}, {"enabled": False}):
        other = ScoringSettings(online=msgspec.structs.replace(OnlineSettings(), **change))
        with pytest.raises(ValueError, match="scorer state was saved for models"):
            Scorer.from_state(other, registry, blob)


# ------------------------------------------------------------------------------------------ scorer and config
def test_scorer_forwards_labels_to_the_sources_that_learn_from_them(
    generated: Generated, registry: FeatureRegistry
) -> None:
    scorer = Scorer.from_settings(ScoringSettings(), registry)
    assert [s.name for s in scorer.sources] == ["anomaly", "online", "rules"]
    assert [s.name for s in scorer.sources if isinstance(s, LabelLearner)] == ["online"]
    scorer.process(_batch(registry, generated.values[:1_000], 0))  # the scaler's warm-up: not buffered
    scorer.process(_batch(registry, generated.values[1_000:1_500], 1_000))
    assert scorer.observe_labels(["t1200", "t100", "nope"], [True, False, False]) == 1
    assert scorer.observe_labels([], []) == 0
    off = Scorer.from_settings(ScoringSettings(online=OnlineSettings(enabled=False)), registry)
    assert "online" not in off.model_versions and off.observe_labels(["t1"], [True]) == 0


def test_online_settings_errors_name_the_key(registry: FeatureRegistry) -> None:
    with pytest.raises(ConfigError) as error:
        _source(registry, features=("amount", "speed"))
    assert str(error.value).startswith("config error: scoring.online.features: unknown feature 'speed' (did you mean:")
    for online, expected in (
        ({"buffer_max": 0}, "config error: scoring.online.buffer_max: Expected `int` >= 1"),
        ({"buffer_ttl_days": 0}, "config error: scoring.online.buffer_ttl_days: Expected `float` > 0.0"),
        ({"fraud_weight": -1}, "config error: scoring.online.fraud_weight: Expected `float` > 0.0"),
        ({"review_probability": 0.99, "block_probability": 0.9}, "config error: scoring.online: review_probability"),
        ({"features": ["amount", "amount"]}, "config error: scoring.online.features: amount listed more than once"),
        ({"buffer": 3}, "config error: scoring.online.buffer: unknown key (allowed: enabled, features, buffer_max,"),
    ):
        with pytest.raises(ConfigError) as error:
            settings_from_dict({"scoring": {"online": online}})
        assert str(error.value).startswith(expected), str(error.value)
