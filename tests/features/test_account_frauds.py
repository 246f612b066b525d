"""Account known frauds (``account_known_frauds_<N>d``, ``account_days_since_fraud``): hand-built cases of
the label join, the window and its edges, what is not counted, the bound on remembered frauds, and results
that do not depend on when entries were dropped. The brute-force property test over random transactions
and labels is ``test_every_feature_matches_brute_force_with_labels`` in test_engine.py."""

from __future__ import annotations

from configs import FeatureSettings
from contracts import Label
from features.registry import ACCOUNT_FRAUDS_MAX

T0 = 1_767_225_600_000
SECOND, MINUTE, HOUR, DAY = 1_000, 60_000, 3_600_000, 86_400_000
KNOWN, SINCE = "account_known_frauds_30d", "account_days_since_fraud"


def _fraud(tx, label_time: int, label: str = "fraud") -> Label:
    return Label(transaction_id=tx.transaction_id, account_id=tx.account_id, label=label, label_time=label_time)


def _account(engine, vector: list[float]) -> tuple[float, float]:
    index = engine.registry.index
    name = next(n for n in engine.registry.names if n.startswith("account_known_frauds_"))
    return vector[index(name)], vector[index(SINCE)]


def test_a_fraud_label_marks_its_account_from_its_label_time(impl, tx) -> None:
    engine = impl.engine.FeatureEngine(FeatureSettings())  # 30 days, lateness 5 min
    assert KNOWN in engine.registry.names
    first, _ = engine.transform_one(stolen := tx(T0, "A", terminal_id="T1"))
    assert _account(engine, first) == (0.0, 30.0)  # none known: the window's length in days
    assert engine.accounts["A"].frauds is None
    assert engine.observe_label(_fraud(stolen, T0 + 2 * DAY))
    assert engine.accounts["A"].frauds == [(T0, T0 + 2 * DAY)]
    after, _ = engine.transform_one(tx(T0 + 3 * DAY, "A"))
    assert _account(engine, after) == (1.0, 3.0)
    other, _ = engine.transform_one(tx(T0 + 3 * DAY, "B", terminal_id="T1"))
    assert _account(engine, other) == (0.0, 30.0)  # another account: only the terminal knows


def test_window_edges_and_the_neutral_value(impl, tx) -> None:
    engine = impl.engine.FeatureEngine(FeatureSettings(allowed_lateness_s=0))
    stolen = tx(T0, "A")
    engine.transform_one(stolen)
    engine.observe_label(_fraud(stolen, T0 + HOUR))
    inside, _ = engine.transform_one(tx(T0 + 30 * DAY - 1, "A"))  # (t - 30 d, t] still holds T0
    assert _account(engine, inside) == (1.0, (30 * DAY - 1) / DAY)
    edge, _ = engine.transform_one(tx(T0 + 30 * DAY, "A"))  # T0 is exactly 30 days back: out
    assert _account(engine, edge) == (0.0, 30.0)
    assert engine.accounts["A"].frauds is None  # dropped behind the horizon: back to nothing at all


def test_label_time_is_checked_against_each_event_time(impl, tx) -> None:
    """A label applied already is not known to an out-of-order transaction paid before its label time."""
    engine = impl.engine.FeatureEngine(FeatureSettings(allowed_lateness_s=3600))
    stolen = tx(T0, "A")
    engine.transform_one(stolen)
    engine.transform_one(tx(T0 + 2 * HOUR, "B"))
    engine.observe_label(_fraud(stolen, T0 + 2 * HOUR))
    before, late = engine.transform_one(tx(T0 + HOUR + 30 * MINUTE, "A"))  # within the lateness
    assert not late and _account(engine, before) == (0.0, 30.0)
    at, _ = engine.transform_one(tx(T0 + 2 * HOUR, "A"))  # label_time <= t: known
    assert _account(engine, at) == (1.0, 2 / 24)


def test_genuine_unknown_repeated_evicted_and_expired_labels_are_not_counted(impl, tx) -> None:
    config = FeatureSettings(pending_labels_max=3, pending_labels_ttl_days=1.0, sweep_interval_s=3600)
    engine = impl.engine.FeatureEngine(config)
    evicted, genuine, twice = tx(T0, "A"), tx(T0 + 1, "A"), tx(T0 + 2, "A")
    for transaction in (evicted, genuine, twice, tx(T0 + 3, "A")):  # four pending, bound three: 'evicted' goes
        engine.transform_one(transaction)
    assert not engine.observe_label(_fraud(evicted, T0 + MINUTE))
    assert engine.observe_label(_fraud(genuine, T0 + MINUTE, "genuine"))
    assert not engine.observe_label(Label(transaction_id="never-scored", account_id="A", label="fraud",
                                          label_time=T0 + MINUTE))
    assert engine.observe_label(_fraud(twice, T0 + MINUTE))
    assert not engine.observe_label(_fraud(twice, T0 + 2 * MINUTE))  # a transaction joins one label
    vector, _ = engine.transform_one(tx(T0 + HOUR, "A"))
    assert _account(engine, vector) == (1.0, (HOUR - 2) / DAY)  # 'twice', once
    old = tx(T0 + HOUR, "C")
    engine.transform_one(old)
    engine.transform_one(tx(T0 + 2 * DAY, "C"))  # sweeps: 'old' expired from the pending buffer
    assert not engine.observe_label(_fraud(old, T0 + 2 * DAY))
    vector, _ = engine.transform_one(tx(T0 + 2 * DAY + MINUTE, "C"))
    assert _account(engine, vector) == (0.0, 30.0)
    assert engine.stats.labels_unmatched == 4


def test_remembered_frauds_are_bounded_oldest_first(impl, tx) -> None:
    engine = impl.engine.FeatureEngine(FeatureSettings())
    frauds = [tx(T0 + i * MINUTE, "A") for i in range(ACCOUNT_FRAUDS_MAX + 8)]  # a card-testing burst
    for transaction in frauds:
        engine.transform_one(transaction)
    for transaction in reversed(frauds):  # one report, the labels in any order
        engine.observe_label(_fraud(transaction, T0 + DAY))
    state = engine.accounts["A"].frauds
    assert len(state) == ACCOUNT_FRAUDS_MAX
    assert [t for t, _ in state] == [f.event_time for f in frauds[8:]]  # the 8 oldest forgotten
    vector, _ = engine.transform_one(tx(T0 + 2 * DAY, "A"))
    assert _account(engine, vector) == (float(ACCOUNT_FRAUDS_MAX), (2 * DAY - (ACCOUNT_FRAUDS_MAX + 7) * MINUTE) / DAY)


def test_a_late_query_never_looks_behind_the_horizon_whether_or_not_it_was_dropped(impl, tx) -> None:
    config = FeatureSettings(account_fraud_window_days=1.0, allowed_lateness_s=0)
    engine = impl.engine.FeatureEngine(config)
    stolen = tx(T0, "A")
    engine.transform_one(stolen)
    engine.observe_label(_fraud(stolen, T0 + HOUR))
    engine.transform_one(tx(T0 + 2 * DAY, "B"))  # watermark 2 days: horizon T0 + 1 day
    assert engine.accounts["A"].frauds == [(T0, T0 + HOUR)]  # not dropped yet: A has not paid since
    vector, late = engine.transform_one(tx(T0 + 12 * HOUR, "A"))  # its own window (T0 - 12 h, T0 + 12 h] holds T0
    assert late
    assert _account(engine, vector) == (0.0, 1.0)  # as if it had been dropped already
    assert engine.accounts["A"].frauds == [(T0, T0 + HOUR)]  # a late event changes no state
    engine.observe_label(_fraud(tx(T0, "A"), T0 + 2 * DAY))  # unknown transaction: nothing recorded
    engine.transform_one(tx(T0 + 2 * DAY, "A"))
    assert engine.accounts["A"].frauds is None


def test_a_late_transactions_fraud_counts_for_its_account_not_its_terminal(impl, tx, feature) -> None:
    engine = impl.engine.FeatureEngine(FeatureSettings(allowed_lateness_s=60))
    engine.transform_one(tx(T0 + HOUR, "A", terminal_id="T1"))
    stolen = tx(T0, "A", terminal_id="T1")
    assert engine.transform_one(stolen)[1]  # late
    engine.observe_label(_fraud(stolen, T0 + HOUR))
    vector, _ = engine.transform_one(tx(T0 + 3 * HOUR, "A", terminal_id="T1"))
    assert _account(engine, vector) == (1.0, 3 / 24)
    assert feature(engine, vector, "terminal_fraud_count") == 0.0


def test_no_state_is_made_for_an_account_only_a_label_knows(impl, tx) -> None:
    engine = impl.engine.FeatureEngine(FeatureSettings(allowed_lateness_s=60))
    engine.transform_one(tx(T0 + HOUR, "B"))
    stolen = tx(T0, "A")
    assert engine.transform_one(stolen)[1]  # late: A has no state
    assert engine.observe_label(_fraud(stolen, T0 + HOUR))  # joined (it was scored), nowhere to record it
    assert "A" not in engine.accounts
    vector, _ = engine.transform_one(tx(T0 + 2 * HOUR, "A"))
    assert _account(engine, vector) == (0.0, 30.0)


def test_partitions_route_labels_to_the_accounts_engine(tx) -> None:
    from features.offline import PartitionedFeatures

    topic = PartitionedFeatures(FeatureSettings(), partitions=4)
    stolen = tx(T0, "acct-7")
    topic.transform_one(stolen)
    assert topic.observe_label(_fraud(stolen, T0 + DAY))
    _, vector, _ = topic.transform_one(tx(T0 + 2 * DAY, "acct-7"))
    assert _account(topic.engines[0], vector) == (1.0, 2.0)
