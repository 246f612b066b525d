"""Which Kafka a command talks to: the address given, the configured cluster, or an embedded broker.

Shared by the command-line entry points (``fraudstream ...``, ``python -m
pipelines.stream``, ``alerts tail``) and kept below them, so none imports
another entry point's module for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console

from configs import Settings
from connectors.broker import EmbeddedBroker, port_answers
from connectors.kafka import ensure_topics, wait_until_ready

#: Where `fraudstream broker` records the address of the broker it runs.
BROKER_STATE = Path(".fraudstream") / "broker.json"

_console = Console(stderr=True)


def running_embedded_broker() -> str | None:
    """The address recorded by a `fraudstream broker` still running in this folder."""
    try:
        state = json.loads(BROKER_STATE.read_text())
    except (OSError, ValueError):
        return None
    host, _, port = str(state.get("bootstrap_servers", "")).rpartition(":")
    return state["bootstrap_servers"] if port.isdigit() and port_answers(host, int(port)) else None


async def prepare(settings: Settings, bootstrap: str | None) -> dict[str, int]:
    """Wait for the broker, then create the configured topics that are missing; partitions per topic."""
    await wait_until_ready(settings.kafka, bootstrap)
    return await ensure_topics(settings.kafka, bootstrap)


@contextlib.contextmanager
def kafka_for(settings: Settings, bootstrap: str | None) -> Iterator[str | None]:
    """Yield the bootstrap servers to use: given, configured, or an embedded broker.

    With ``kafka.embedded`` and no address given, reuse the broker a running
    `fraudstream broker` recorded, else start one for the duration of the block.
    """
    if bootstrap or not settings.kafka.embedded:
        yield bootstrap
        return
    existing = running_embedded_broker()
    if existing:
        _console.print(f"[dim]using the embedded broker at {existing}[/dim]")
        yield existing
        return
    with EmbeddedBroker(port=settings.kafka.embedded_port) as broker:
        _console.print(f"[dim]started an embedded broker at {broker.bootstrap_servers} for this run[/dim]")
        asyncio.run(prepare(settings, broker.bootstrap_servers))
        yield broker.bootstrap_servers
