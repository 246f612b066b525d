"""The console's alert queue: bounded, newest first, filtered with `alerts tail`'s filter, indexed by account.

Pure: the Kafka reader adds alerts, the web layer queries. Newest means the
latest ``alert_time`` (ties: the later arrival), not the order of arrival: the
reader's backfill and the partitions of the topic deliver alerts out of time
order. An alert seen again (a replay re-sends it with the same ``alert_id``)
replaces the one kept, in place; past ``max_alerts`` the oldest go first.

>>> from contracts import Alert, Reasons
>>> def alert(n, account="acc-1", score=0.99):
...     return Alert(alert_id=f"a{n}", transaction_id=f"t{n}", account_id=account, event_time=1767225600000 + n,
...                  score=score, decision="review", reasons=Reasons(), model_versions={}, feature_version="fs1",
...                  ingest_time=1767225600000, alert_time=1767225600000)
>>> queue = AlertQueue(max_alerts=3, recent_per_account=2)
>>> [queue.add(alert(n, account=f"acc-{n % 2}")) for n in range(4)] + [queue.add(alert(3, account="acc-1"))]
[True, True, True, True, False]
>>> [a.alert_id for a in queue.newest()], queue.get("a0")
(['a3', 'a2', 'a1'], None)
>>> [a.alert_id for a in queue.newest(make_filter(accounts=["acc-1"]))], [a.alert_id for a in queue.recent_for("acc-1")]
(['a3', 'a1'], ['a3', 'a1'])
"""

from __future__ import annotations

import bisect
import itertools

from contracts.records import Alert
from pipelines.alerts import AlertFilter, make_filter

__all__ = ["AlertQueue", "make_filter"]

#: Where an alert sorts: its alert_time when first seen, then its arrival.
_Place = tuple[int, int, str]


class AlertQueue:
    """The latest ``max_alerts`` alerts by alert time, and each account's latest ``recent_per_account``."""

    def __init__(self, max_alerts: int, recent_per_account: int) -> None:
        self.max_alerts, self.recent_per_account = max_alerts, recent_per_account
        self._alerts: dict[str, Alert] = {}
        self._places: dict[str, _Place] = {}
        self._order: list[_Place] = []  # oldest first
        self._by_account: dict[str, list[_Place]] = {}  # oldest first
        self._arrivals = itertools.count()
        #: Alerts dropped to stay within max_alerts.
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._alerts)

    def add(self, alert: Alert) -> bool:
        """Keep ``alert``; True when it is new and kept, False when it replaced the alert of the same id (or, older
        than every alert of a full queue, was not kept)."""
        if alert.alert_id in self._alerts:
            self._alerts[alert.alert_id] = alert
            return False
        place = (alert.alert_time, next(self._arrivals), alert.alert_id)
        self._alerts[alert.alert_id] = alert
        self._places[alert.alert_id] = place
        bisect.insort(self._order, place)
        recent = self._by_account.setdefault(alert.account_id, [])
        bisect.insort(recent, place)
        if len(recent) > self.recent_per_account:
            del recent[0]
        while len(self._order) > self.max_alerts:
            self._forget(self._order.pop(0))
            self.evicted += 1
        return alert.alert_id in self._alerts

    def _forget(self, place: _Place) -> None:
        alert = self._alerts.pop(place[2])
        del self._places[place[2]]
        recent = self._by_account.get(alert.account_id)
        if recent is None:
            return
        if place in recent:
            recent.remove(place)
        if not recent:
            del self._by_account[alert.account_id]

    def get(self, alert_id: str) -> Alert | None:
        return self._alerts.get(alert_id)

    def newest(self, alert_filter: AlertFilter | None = None, limit: int | None = None) -> list[Alert]:
        """The alerts ``alert_filter`` lets through, newest first, at most ``limit``."""
        found: list[Alert] = []
        for _, _, alert_id in reversed(self._order):
            alert = self._alerts[alert_id]
            if alert_filter is None or alert_filter.matches(alert):
                found.append(alert)
                if limit is not None and len(found) >= limit:
                    break
        return found

    def recent_for(self, account_id: str, exclude: str | None = None) -> list[Alert]:
        """The account's latest alerts kept, newest first (without ``exclude``, an alert id)."""
        recent = self._by_account.get(account_id, [])
        return [self._alerts[alert_id] for _, _, alert_id in reversed(recent) if alert_id != exclude]
