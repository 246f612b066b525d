"""The fan-out of what happens (new alerts, verdicts, status ticks) to every open page, as server-sent events.

Each page subscribes a bounded queue, with the filter its queue shows (alerts
it leaves out are not sent); a page too slow to keep up loses its
oldest events and is told to reload the queue (a ``resync`` event), so a slow
reader never holds memory or the feed back.

>>> import asyncio
>>> async def demo():
...     hub = EventHub(max_pending=2)
...     with hub.subscription() as inbox:
...         for n in range(3):
...             hub.publish("alert", {"n": n})
...         return [await inbox.next() for _ in range(2)]
>>> [sse.split(chr(10))[0] for sse in asyncio.run(demo())]
['event: resync', 'event: alert']
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import msgspec

from contracts.records import Alert
from pipelines.alerts import AlertFilter


def sse(event: str, data: Any) -> str:
    """One server-sent event: its name and its data as one line of JSON.

    >>> sse("status", {"state": "absent"})
    'event: status\\ndata: {"state":"absent"}\\n\\n'
    """
    return f"event: {event}\ndata: {msgspec.json.encode(data).decode()}\n\n"


class Inbox:
    """One page's pending events (at most ``max_pending``)."""

    def __init__(self, max_pending: int, alert_filter: AlertFilter | None = None) -> None:
        self.queue: asyncio.Queue[str] = asyncio.Queue(max_pending)
        self.alert_filter = alert_filter
        self.overflowed = False

    def put(self, message: str, alert: Alert | None = None) -> None:
        if alert is not None and self.alert_filter is not None and not self.alert_filter.matches(alert):
            return
        if self.queue.full():
            self.overflowed = True
            self.queue.get_nowait()
        self.queue.put_nowait(message)

    async def next(self) -> str:
        """The next event; ``resync`` first when events were lost."""
        if self.overflowed:
            self.overflowed = False
            return sse("resync", {"reason": "events were dropped: reload the queue"})
        return await self.queue.get()


class EventHub:
    """Publishes each event to every subscribed :class:`Inbox`."""

    def __init__(self, max_pending: int = 1_000) -> None:
        self.max_pending = max_pending
        self.inboxes: set[Inbox] = set()

    def publish(self, event: str, data: Any, alert: Alert | None = None) -> None:
        """Send ``data`` as ``event`` to every page (about ``alert``: to those whose filter it passes)."""
        message = sse(event, data)
        for inbox in list(self.inboxes):
            inbox.put(message, alert)

    @contextlib.contextmanager
    def subscription(self, alert_filter: AlertFilter | None = None) -> Iterator[Inbox]:
        inbox = Inbox(self.max_pending, alert_filter)
        self.inboxes.add(inbox)
        try:
            yield inbox
        finally:
            self.inboxes.discard(inbox)
