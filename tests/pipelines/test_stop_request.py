"""The status loop's stop request, set from a signal handler that runs in the very thread waiting on it."""

from __future__ import annotations

import os
import signal
import threading
import time

from pipelines.stream import StopRequest


def _signals(count: int, every_s: float) -> threading.Thread:
    def send() -> None:
        for _ in range(count):
            os.kill(os.getpid(), signal.SIGUSR1)
            time.sleep(every_s)

    return threading.Thread(target=send, daemon=True)


def test_a_signal_wakes_the_wait_at_once() -> None:
    stop = StopRequest()
    previous = signal.signal(signal.SIGUSR1, stop.request)
    try:
        sender = _signals(1, 0.0)
        started = time.monotonic()
        threading.Timer(0.1, sender.start).start()
        assert stop.wait(10.0) is True and stop.is_set()
        assert time.monotonic() - started < 2.0
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_signals_landing_while_the_loop_wakes_never_hang_it() -> None:
    """Signals landing around every wake-up never hang the loop: the handler only sets a flag (the threading.Event
    it replaces hung a demo stopped by two SIGINTs: a handler run inside another handler's set() waited for the
    lock that one held)."""
    stop = StopRequest()
    previous = signal.signal(signal.SIGUSR1, stop.request)
    try:
        sender = _signals(500, 0.0005)
        sender.start()
        deadline = time.monotonic() + 20
        woken = 0
        while sender.is_alive():
            stop.requested = False
            woken += stop.wait(0.001, slice_s=0.0005)  # wakes constantly: the signals land around every wake-up
            assert time.monotonic() < deadline
        sender.join()
        assert woken > 0  # the handler ran, in this thread, amid the waits
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_without_a_request_the_wait_lasts_its_timeout() -> None:
    stop = StopRequest()
    started = time.monotonic()
    assert stop.wait(0.2) is False
    assert 0.18 <= time.monotonic() - started < 1.0
