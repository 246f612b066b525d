"""The fan-out of events to the open pages: filtered per page, bounded, a resync when events were lost."""

from __future__ import annotations

import asyncio

from pipelines.alerts import make_filter
from pipelines.console.events import EventHub
from tests.pipelines.console.consolekit import alert


def test_each_page_gets_the_alerts_its_filter_lets_through_and_every_other_event() -> None:
    async def run() -> tuple[list[str], list[str], int]:
        hub = EventHub()
        with hub.subscription(make_filter(decision="block")) as blocks, hub.subscription() as everything:
            hub.publish("alert", {"id": 1}, alert(1, decision="review"))
            hub.publish("alert", {"id": 2}, alert(2, decision="block"))
            hub.publish("status", {"state": "absent"})
            got_blocks = [await blocks.next() for _ in range(2)]
            got_all = [await everything.next() for _ in range(3)]
        return got_blocks, got_all, len(hub.inboxes)

    blocks, everything, left = asyncio.run(run())
    assert blocks == ['event: alert\ndata: {"id":2}\n\n', 'event: status\ndata: {"state":"absent"}\n\n']
    assert [message.split("\n")[1] for message in everything] == ['data: {"id":1}', 'data: {"id":2}', 'data: {"state":"absent"}']
    assert left == 0  # pages that left are forgotten


def test_a_slow_page_keeps_the_latest_events_and_is_told_to_reload() -> None:
    async def run() -> list[str]:
        hub = EventHub(max_pending=3)
        with hub.subscription() as inbox:
            for n in range(10):
                hub.publish("alert", {"n": n})
            return [await inbox.next() for _ in range(4)]

    got = asyncio.run(run())
    assert got[0].startswith("event: resync")
    assert [message.split("\n")[1] for message in got[1:]] == ['data: {"n":7}', 'data: {"n":8}', 'data: {"n":9}']
