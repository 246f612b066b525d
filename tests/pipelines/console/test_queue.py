"""The console's alert queue: bounded, newest first, `alerts tail`'s filter, each account's recent alerts."""

from __future__ import annotations

import msgspec

from contracts import Alert
from pipelines.alerts import make_filter
from pipelines.console.queue import AlertQueue
from tests.pipelines.console.consolekit import alert


def ids(alerts: list) -> list[str]:  # type: ignore[type-arg]
    return [a.alert_id for a in alerts]


def test_the_queue_keeps_the_latest_alerts_newest_first_and_forgets_evicted_ones_per_account() -> None:
    queue = AlertQueue(max_alerts=3, recent_per_account=10)
    for n in range(5):
        queue.add(alert(n, account=f"acc-{n % 2}"))
    assert ids(queue.newest()) == ["alert-4", "alert-3", "alert-2"] and len(queue) == 3 and queue.evicted == 2
    assert queue.get("alert-1") is None and queue.get("alert-2") is not None
    assert ids(queue.recent_for("acc-0")) == ["alert-4", "alert-2"]  # alert-0 was evicted
    assert ids(queue.recent_for("acc-1")) == ["alert-3"]
    assert ids(queue.recent_for("acc-0", exclude="alert-4")) == ["alert-2"]
    assert queue.recent_for("acc-unknown") == []


def test_an_alert_seen_again_replaces_the_kept_one_in_place() -> None:
    queue = AlertQueue(max_alerts=10, recent_per_account=10)
    assert queue.add(alert(1)) and queue.add(alert(2))
    replayed = msgspec.structs.replace(alert(1), score=0.9999)
    assert queue.add(replayed) is False
    assert ids(queue.newest()) == ["alert-2", "alert-1"] and queue.get("alert-1") == replayed
    assert ids(queue.recent_for("acc-1")) == ["alert-2", "alert-1"]


def test_per_account_recent_alerts_are_bounded() -> None:
    queue = AlertQueue(max_alerts=100, recent_per_account=2)
    for n in range(5):
        queue.add(alert(n, account="acc-7"))
    assert ids(queue.recent_for("acc-7")) == ["alert-4", "alert-3"]
    assert len(queue) == 5


def test_the_queue_filters_with_alerts_tails_filter_and_a_limit() -> None:
    queue = AlertQueue(max_alerts=100, recent_per_account=10)
    queue.add(alert(1, "acc-1", decision="block", score=0.9999, rules=("card_testing",)))
    queue.add(alert(2, "acc-2", score=0.996))
    queue.add(alert(3, "acc-1", score=0.998))
    assert ids(queue.newest(make_filter(decision="block"))) == ["alert-1"]
    assert ids(queue.newest(make_filter(accounts=["acc-1"]))) == ["alert-3", "alert-1"]
    assert ids(queue.newest(make_filter(min_score="0.997"), limit=1)) == ["alert-3"]
    assert ids(queue.newest(make_filter(rule="card_testing"))) == ["alert-1"]
    assert ids(queue.newest(limit=2)) == ["alert-3", "alert-2"]


def at(n: int, alert_time: int, account: str = "acc-1") -> Alert:
    return msgspec.structs.replace(alert(n, account), alert_time=alert_time)


def test_newest_is_by_alert_time_whatever_the_order_alerts_arrive_in() -> None:
    queue = AlertQueue(max_alerts=3, recent_per_account=2)
    for n, alert_time in ((1, 300), (2, 100), (3, 200)):  # e.g. a backfill reading partition after partition
        assert queue.add(at(n, alert_time))
    assert ids(queue.newest()) == ["alert-1", "alert-3", "alert-2"]
    assert ids(queue.recent_for("acc-1")) == ["alert-1", "alert-3"]
    assert queue.add(at(4, 250))  # full: the oldest by time (alert-2) goes
    assert ids(queue.newest()) == ["alert-1", "alert-4", "alert-3"] and queue.evicted == 1
    assert queue.add(at(5, 50)) is False and queue.get("alert-5") is None  # older than all kept: not kept
    assert ids(queue.newest()) == ["alert-1", "alert-4", "alert-3"]
