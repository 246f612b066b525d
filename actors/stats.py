"""What one scoring actor's loop measures: phase times, latency samples, event rate, errors.

Every part of the worker records into these; :mod:`actors.status` reads them
back into the actor's status. Nothing here does I/O.

>>> stats = LoopStats()
>>> stats.sample_rate(0, now=100.0)
>>> stats.sample_rate(500, now=102.0)
>>> stats.events_per_s(now=103.0)
250.0
>>> errors = ErrorLog()
>>> errors.set("commit", "offset commit failed: KafkaError")
>>> errors.errors, errors.last_error[1]
({'commit': 'offset commit failed: KafkaError'}, 'offset commit failed: KafkaError')
>>> errors.clear("commit")
>>> errors.errors, errors.last_error is None
({}, False)
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable
from typing import Protocol

import numpy as np

from actors.messages import Percentiles, PhaseFigures

#: Most per-event latencies kept for percentiles.
LATENCY_SAMPLES = 200_000
#: The event rate is measured over this many seconds of samples.
RATE_WINDOW_S = 10.0


class Stamped(Protocol):
    """What latency needs of a consumed record: its Kafka timestamp (ms)."""

    @property
    def timestamp(self) -> int: ...


def percentiles(samples: deque[float]) -> Percentiles:
    """p50, p95, p99 (ms, two decimals) and the number of samples; None values when there are none.

    >>> percentiles(deque([1.0, 2.0, 3.0]))
    Percentiles(p50=2.0, p95=2.9, p99=2.98, samples=3)
    """
    if not samples:
        return Percentiles()
    values = np.fromiter(samples, dtype=np.float64)
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return Percentiles(p50=round(float(p50), 2), p95=round(float(p95), 2), p99=round(float(p99), 2), samples=len(values))


class PhaseTimes:
    """How long each phase of the loop took (ms), to name what holds scoring up.

    Phases: ``poll`` (getmany, including its wait for records), ``stage``
    (applying terminal deltas and broadcast risk), ``score`` (decode, features,
    models, handing alerts to the producer), ``terminal`` (terminal updates
    out), ``ack`` (waiting for the alert acknowledgements), ``commit`` and
    ``checkpoint`` (the in-loop part: snapshot and what precedes it).
    """

    PHASES = ("poll", "stage", "score", "terminal", "ack", "commit", "checkpoint")

    def __init__(self, samples: int = 20_000) -> None:
        self.samples: dict[str, deque[float]] = {phase: deque(maxlen=samples) for phase in self.PHASES}
        self._mark = time.perf_counter()

    def start(self) -> None:
        self._mark = time.perf_counter()

    def lap(self, phase: str) -> None:
        """Record the time since the previous mark as ``phase``; the next phase starts now."""
        now = time.perf_counter()
        self.samples[phase].append((now - self._mark) * 1000.0)
        self._mark = now

    def clear(self) -> None:
        for samples in self.samples.values():
            samples.clear()

    def summary(self) -> dict[str, PhaseFigures]:
        """Per phase that ran: p50, p99 and max (ms) and the number of samples."""
        out: dict[str, PhaseFigures] = {}
        for phase, samples in self.samples.items():
            if not samples:
                continue
            values = np.fromiter(samples, dtype=np.float64)
            p50, p99 = np.percentile(values, [50, 99])
            out[phase] = PhaseFigures(p50=round(float(p50), 2), p99=round(float(p99), 2),
                                      max=round(float(values.max()), 2), samples=len(values))
        return out


class LoopStats:
    """Latencies, event rate, batch count and phase times of one actor's loop (recorded per micro-batch)."""

    def __init__(self) -> None:
        #: Kafka timestamp -> alerts acknowledged, per scored event (ms).
        self.latencies: deque[float] = deque(maxlen=LATENCY_SAMPLES)
        #: Kafka timestamp -> the poll that returned the record (the part of the latency before scoring).
        self.fetch_delays: deque[float] = deque(maxlen=LATENCY_SAMPLES)
        #: (monotonic time, events scored so far by every owned partition).
        self.rate_samples: deque[tuple[float, int]] = deque(maxlen=64)
        self.phases = PhaseTimes()
        self.batches = 0
        self.started_at = time.time()
        #: Wall time of the first non-empty poll (benchmarks).
        self.first_poll_wall: float | None = None

    def record_latencies(self, records: Iterable[Stamped], polled_ms: float, acked_ms: float) -> None:
        """One partition's scored records: their latency to the acknowledgement, and to the poll."""
        self.latencies.extend(acked_ms - r.timestamp for r in records)
        self.fetch_delays.extend(polled_ms - r.timestamp for r in records)

    def sample_rate(self, scored_total: int, now: float | None = None) -> None:
        """Note how many events the owned partitions have scored so far (after each step)."""
        self.rate_samples.append((time.monotonic() if now is None else now, scored_total))

    def events_per_s(self, now: float | None = None) -> float:
        """Events scored per second over the last RATE_WINDOW_S (0 before two samples)."""
        since = (time.monotonic() if now is None else now) - RATE_WINDOW_S
        samples = [s for s in self.rate_samples if s[0] >= since]
        if len(samples) < 2 or samples[-1][0] <= samples[0][0]:
            return 0.0
        return (samples[-1][1] - samples[0][1]) / (samples[-1][0] - samples[0][0])

    def latency_ms(self) -> Percentiles:
        """Percentiles of Kafka timestamp -> alerts acknowledged, per scored event."""
        return percentiles(self.latencies)

    def reset_latency(self) -> None:
        self.latencies.clear()
        self.fetch_delays.clear()
        self.phases.clear()


class ErrorLog:
    """What is wrong now, by where it happened (loop, commit, checkpoint of ...), cleared once it works again;
    and the latest error ever seen, with its wall time (stays after it is cleared)."""

    def __init__(self) -> None:
        self.errors: dict[str, str] = {}
        self.last_error: tuple[float, str] | None = None

    def set(self, where: str, message: str) -> None:
        self.errors[where] = message
        self.last_error = (time.time(), message)

    def clear(self, where: str) -> None:
        self.errors.pop(where, None)
