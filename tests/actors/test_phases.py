"""The loop's phase timer names where time went."""

from __future__ import annotations

import time

from actors.stats import PhaseTimes


def test_laps_are_attributed_to_their_phase() -> None:
    phases = PhaseTimes(samples=10)
    for _ in range(3):
        phases.start()
        time.sleep(0.002)
        phases.lap("poll")
        phases.lap("score")  # nothing happened since the previous lap
    summary = phases.summary()
    assert set(summary) == {"poll", "score"}
    assert summary["poll"].samples == 3 and summary["poll"].p50 >= 2.0
    assert summary["score"].max < summary["poll"].p50
    phases.clear()
    assert phases.summary() == {}
