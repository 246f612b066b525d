"""The demo's pure parts: its settings, the stall guard, the dashboard's rates (the whole demo: tests/integration)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from actors.messages import ActorStatus, JobStatus, JobTotals
from pipelines.demo import Dashboard, DemoOptions, Stall, demo_settings
from pipelines.scoreboard import GroundTruth, Scoreboard


def _status(scored: int, lag: int, alerts: int = 0, errors: tuple[str, ...] = ()) -> JobStatus:
    totals = JobTotals(scored=scored, alerts=alerts, dead_letters=0, rekeyed=0, labels_applied=0, lag=lag,
                       offset_gaps=0, late_events=0, terminal_stale=0)
    return JobStatus(time=0.0, actors=[ActorStatus(actor=f"scoring-{i}", error=e) for i, e in enumerate(errors)],
                     partitions={}, totals=totals, events_per_s=0.0, plan=[], stage_plan=[], events=[])


def test_each_run_gets_its_own_store_checkpoints_and_embedded_broker(tmp_path: Path) -> None:
    options = DemoOptions(accounts=500, days=20, seed=3)
    settings = demo_settings(options, tmp_path / "run")
    assert settings.mlflow.tracking_uri == f"sqlite:///{(tmp_path / 'run' / 'mlflow.db').resolve()}"
    assert settings.stream.checkpoint_uri == str((tmp_path / "run" / "checkpoints").resolve())
    assert settings.kafka.embedded and settings.kafka.embedded_port == 0  # never a fixed, possibly taken port
    assert (settings.generator.accounts, settings.generator.days, settings.generator.seed) == (500, 20, 3)


def test_a_stream_that_stops_moving_is_reported_after_the_limit() -> None:
    stall = Stall(limit_s=60)
    assert stall.check(_status(100, 50), now=0.0) is None
    assert stall.check(_status(100, 50), now=59.0) is None
    message = stall.check(_status(100, 50, errors=("RayActorError('died')",)), now=61.0)
    assert message is not None and "nothing scored for 60 s with 50 events waiting" in message
    assert "scoring-0: RayActorError('died')" in message


def test_progress_or_an_empty_backlog_is_never_a_stall() -> None:
    stall = Stall(limit_s=60)
    stall.check(_status(100, 50), now=0.0)
    assert stall.check(_status(150, 50), now=100.0) is None  # scored more
    assert stall.check(_status(150, 0), now=300.0) is None  # nothing waiting (the producer is paced or done)
    assert stall.check(_status(150, 0), now=900.0) is None


def test_the_dashboard_rates_come_from_the_counts_between_two_statuses() -> None:
    table = pa.table({
        "transaction_id": ["t0"], "account_id": ["A1"], "event_time": pa.array([0], pa.timestamp("ms", tz="UTC")),
        "is_fraud": [False], "fraud_scenario": pa.array([None], pa.string()),
    })  # fmt: skip
    dash = Dashboard(Scoreboard(GroundTruth(table, partitions=1, live_from_ms=0)), total=1, model="m v1", started=0.0)
    dash.update(_status(scored=0, lag=0), now=0.0)
    dash.update(_status(scored=1000, lag=7, alerts=10), now=2.0)
    assert dash.throughput[-1] == (2.0, 500.0, 7)
    assert dash.alerts_per_s == 5.0
    assert "fraudstream demo" in str(dash.render().renderables[0])
