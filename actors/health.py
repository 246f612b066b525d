"""Is Kafka answering? Honest status and one log line per outage, not one per retry.

While no broker answers, aiokafka's consumer keeps its last fetch's high
watermarks, so a lag computed from them reads as if nothing were wrong, and
its connection errors are logged on every retry (thousands a minute). The
scoring actor asks :class:`KafkaHealth` instead: a partition whose latest fetch
response is older than ``stream.kafka_wait_grace_s`` has no known lag, and the
actor says it is waiting for Kafka. Each outage is logged once when it starts
and once when it ends; meanwhile a filter on aiokafka's loggers lets each
distinct message through once per outage.

>>> health = KafkaHealth(grace_s=10.0, name="scoring-0")
>>> health.waiting([1_000_000], now_s=1_005.0) is None
True
>>> health.waiting([1_000_000], now_s=1_030.0)
'waiting for Kafka: no fetch answered for 30 s (grace 10 s)'
"""

from __future__ import annotations

import logging
import time

from actors.messages import KafkaStatus

log = logging.getLogger(__name__)

#: Loggers of the Kafka client (its module names) whose repeats are dropped.
CLIENT_LOGGERS = ("aiokafka", "aiokafka.conn", "aiokafka.cluster", "aiokafka.consumer.consumer",
                  "aiokafka.consumer.fetcher", "aiokafka.consumer.group_coordinator", "aiokafka.producer.producer",
                  "aiokafka.producer.sender", "aiokafka.admin.client")
#: Outside an outage, a client message repeats in the log at most this often.
REPEAT_S = 60.0


class OncePerOutage(logging.Filter):
    """Lets each distinct client message (its format string) through once per outage, and once a minute
    outside one; :meth:`reset` at the end of an outage.

    >>> quiet = OncePerOutage()
    >>> record = logging.LogRecord("aiokafka", logging.ERROR, "", 0, "Unable connect to %s", ("b",), None)
    >>> quiet.filter(record), quiet.filter(record), quiet.dropped
    (True, False, 1)
    """

    def __init__(self) -> None:
        super().__init__()
        self.seen: dict[str, float] = {}
        self.outage = False
        self.dropped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        template = str(record.msg)[:120]
        now = time.monotonic()
        last = self.seen.get(template)
        if last is not None and (self.outage or now - last < REPEAT_S):
            self.dropped += 1
            return False
        self.seen[template] = now
        return True

    def reset(self) -> None:
        self.seen.clear()
        self.dropped = 0


class KafkaHealth:
    """Tracks the age of the latest fetch response and turns it into status and log lines."""

    def __init__(self, grace_s: float, name: str) -> None:
        self.grace_s = grace_s
        self.name = name
        self.outage_since: float | None = None
        self.outages = 0
        self.filter = OncePerOutage()
        self._installed = False

    def install(self) -> None:
        """Filter the client's loggers in this process (idempotent)."""
        if not self._installed:
            for name in CLIENT_LOGGERS:
                logging.getLogger(name).addFilter(self.filter)
            self._installed = True

    @staticmethod
    def age_s(fetch_times_ms: list[int | None], now_s: float | None = None) -> float | None:
        """Seconds since the freshest fetch response of any partition (None before the first)."""
        known = [t for t in fetch_times_ms if t is not None]
        if not known:
            return None
        now = time.time() if now_s is None else now_s
        return max(0.0, now - max(known) / 1000.0)

    def waiting(self, fetch_times_ms: list[int | None], now_s: float | None = None) -> str | None:
        """'waiting for Kafka: ...' once no fetch answered for longer than the grace, else None."""
        age = self.age_s(fetch_times_ms, now_s)
        if age is None or age <= self.grace_s:
            return None
        return f"waiting for Kafka: no fetch answered for {age:.0f} s (grace {self.grace_s:g} s)"

    def observe(self, fetch_times_ms: list[int | None]) -> None:
        """After each poll: log the start and the end of an outage, once each."""
        age = self.age_s(fetch_times_ms)
        if age is None:
            return
        if age > self.grace_s and self.outage_since is None:
            self.outage_since = time.time() - age
            self.outages += 1
            self.filter.outage = True
            log.warning("%s: Kafka is not answering: no fetch for %.0f s; waiting for it (the client's "
                        "repeated connection errors are shown once each until it answers)", self.name, age)
        elif age <= self.grace_s and self.outage_since is not None:
            log.warning("%s: Kafka answers again after %.0f s (%d repeated client log lines dropped)",
                        self.name, time.time() - self.outage_since, self.filter.dropped)
            self.outage_since = None
            self.filter.outage = False
            self.filter.reset()

    def status(self, fetch_times_ms: list[int | None]) -> KafkaStatus:
        """``ok``, or ``waiting`` past the grace; the age of the freshest fetch and the outages seen."""
        age = self.age_s(fetch_times_ms)
        waiting = self.waiting(fetch_times_ms)
        return KafkaStatus(
            state="waiting" if waiting else "ok",
            last_fetch_age_s=None if age is None else round(age, 3),
            outages=self.outages,
            outage_since=self.outage_since,
        )
