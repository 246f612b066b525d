"""Output delivery: every alert, dead letter and stage update of a micro-batch is acknowledged
before the batch's input offsets move.

:meth:`Delivery.deliver` sends a batch's outputs and waits for every
acknowledgement. A send that fails is sent again after a backoff that doubles
(``stream.delivery_backoff_ms`` up to ``stream.delivery_backoff_max_ms``), for as
long as it takes: the caller does not commit, checkpoint or poll further until
it returns, so the partitions stop advancing rather than lose output, and
:meth:`Delivery.status` says what is stuck and why. A record that can never be
sent because it is too large is replaced by a small dead letter that keeps its
position, size and reason (:func:`shrink`). When the job is stopping,
delivery gives up after one more attempt and raises :class:`Undelivered`;
the caller must then not checkpoint (the next owner replays from the last
checkpoint, so nothing is lost).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import msgspec
from aiokafka.errors import MessageSizeTooLargeError, RecordListTooLargeError

from actors.messages import DeliveryOk, DeliveryRetrying, DeliveryStatus
from contracts.records import DeadLetter, SourcePosition, decode_dead_letter, encode

log = logging.getLogger(__name__)

TOO_LARGE = (MessageSizeTooLargeError, RecordListTooLargeError)


@dataclass(slots=True)
class Outgoing:
    """One record to produce, and what it is (for status and for replacing it when it is too large)."""

    topic: str
    value: bytes
    key: bytes | None = None
    #: Destination partition (None: by key, Kafka's default partitioner).
    partition: int | None = None
    #: alert | dead_letter | rekeyed | stage
    kind: str = "alert"
    #: The partition of ``transactions``/``labels`` whose progress waits for this record.
    owner: int | None = None


class Undelivered(RuntimeError):
    """Outputs that could not be delivered before the job stopped: the owners' state must not be checkpointed."""

    def __init__(self, outgoing: list[Outgoing], error: str) -> None:
        self.outgoing = outgoing
        self.owners = sorted({o.owner for o in outgoing if o.owner is not None})
        super().__init__(f"{len(outgoing)} outputs not delivered ({error})")


class Delivery:
    """Sends micro-batches of outputs with one producer until each is acknowledged."""

    def __init__(self, dead_letter_topic: str, backoff_ms: int, backoff_max_ms: int) -> None:
        self.dead_letter_topic = dead_letter_topic
        self.backoff_s = backoff_ms / 1000.0
        self.backoff_max_s = max(backoff_ms, backoff_max_ms) / 1000.0
        #: What is waiting to be delivered right now (empty when all is well).
        self.pending: list[Outgoing] = []
        self.since: float | None = None
        self.attempts = 0
        self.last_error: str | None = None
        #: Records replaced by a smaller dead letter because they were too large to send.
        self.replaced = 0
        #: Sends that failed and were retried.
        self.retried = 0

    async def deliver(self, producer: Any, outgoing: list[Outgoing], stopping: asyncio.Event | None = None) -> None:
        """Send ``outgoing`` and return once every record (or its replacement) is acknowledged."""
        pending = outgoing
        backoff = self.backoff_s
        while pending:
            failed: list[Outgoing] = []
            errors: list[BaseException] = []
            sent: list[tuple[Outgoing, asyncio.Future[Any]]] = []
            for record in pending:
                try:
                    sent.append((record, await producer.send(record.topic, record.value, key=record.key,
                                                             partition=record.partition)))
                except Exception as exc:
                    self._failed(record, exc, failed, errors)
            results = await asyncio.gather(*(future for _, future in sent), return_exceptions=True)
            for (record, _), result in zip(sent, results):
                if isinstance(result, BaseException):
                    self._failed(record, result, failed, errors)
            if not failed:
                break
            retry_now = all(isinstance(e, TOO_LARGE) for e in errors)  # only replacements: send them at once
            self.pending, self.attempts = failed, self.attempts + 1
            self.since = self.since or time.time()
            real = [e for e in errors if not isinstance(e, TOO_LARGE)]
            if real:
                self.last_error = f"{type(real[0]).__name__}: {real[0]}"[:300]
                self.retried += len(real)
                if self.attempts == 1:
                    log.warning("%d outputs not acknowledged (%s); retrying until they are", len(real), self.last_error)
                if stopping is not None and stopping.is_set() and self.attempts > 1:
                    raise Undelivered(failed, self.last_error)
            pending = failed
            if not retry_now:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.backoff_max_s)
        if self.since is not None:
            log.warning("outputs delivered after %d attempts in %.1f s", self.attempts + 1, time.time() - self.since)
        self.pending, self.since, self.attempts = [], None, 0

    def _failed(self, record: Outgoing, exc: BaseException, failed: list[Outgoing], errors: list[BaseException]) -> None:
        errors.append(exc)
        if isinstance(exc, TOO_LARGE):
            smaller = shrink(record, self.dead_letter_topic, f"{type(exc).__name__}")
            if smaller is not None:
                self.replaced += 1
                log.warning("a %s of %d bytes is too large to send (%s); sent as a dead letter without its bytes",
                            record.kind, len(record.value), type(exc).__name__)
                failed.append(smaller)
                return
        failed.append(record)

    def status(self) -> DeliveryStatus:
        """``ok``, or how many outputs are waiting since when, for which partitions, and why."""
        if not self.pending:
            return DeliveryOk(replaced_too_large=self.replaced, retried=self.retried)
        return DeliveryRetrying(
            undelivered=len(self.pending),
            since_s=round(time.time() - (self.since or time.time()), 1),
            attempts=self.attempts,
            error=self.last_error,
            partitions=sorted({o.owner for o in self.pending if o.owner is not None}),
            replaced_too_large=self.replaced,
            retried=self.retried,
        )


def shrink(record: Outgoing, dead_letter_topic: str, why: str) -> Outgoing | None:
    """A small dead letter standing for ``record``, which is too large to send; None if it is one already.

    A dead letter loses its embedded bytes (position, size and SHA-256 stay); any
    other record becomes a dead letter that names where it came from.
    """
    if record.kind == "dead_letter":
        letter = decode_dead_letter(record.value)
        if letter.bytes_omitted:
            return None
        smaller = letter.without_bytes(f"the dead letter was too large to send ({why})")
        return Outgoing(dead_letter_topic, encode(smaller), kind="dead_letter", owner=record.owner)
    source = _source_of(record)
    letter = DeadLetter(
        key=None, value=None, topic=source.topic if source else record.topic,
        partition=source.partition if source else (record.partition or 0), offset=source.offset if source else 0,
        error=f"the {record.kind} of {len(record.value)} bytes for topic {record.topic} was too large to send ({why})",
        field=None, failed_at=int(time.time() * 1000), value_size=len(record.value), bytes_omitted=True,
    )
    return Outgoing(dead_letter_topic, encode(letter), kind="dead_letter", owner=record.owner)


class _HasSource(msgspec.Struct):
    source: SourcePosition | None = None


def _source_of(record: Outgoing) -> SourcePosition | None:
    """Where an alert's transaction was read (alerts carry it); None for other records."""
    try:
        return msgspec.json.decode(record.value, type=_HasSource).source
    except (msgspec.MsgspecError, UnicodeDecodeError):
        return None
