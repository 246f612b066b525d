"""Fixtures of the stream-job tests: fresh topics, private checkpoints, jobs drained at the end."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import msgspec
import pytest

from configs import Settings
from pipelines.stream import StreamJob


@pytest.fixture
def stream_settings(isolated_settings, tmp_path: Path):
    """Fresh topics, a private checkpoint directory and small, frequent checkpoints."""

    def make(partitions: int = 4, **stream: Any) -> Settings:
        settings = isolated_settings(partitions=partitions)
        options = {
            "checkpoint_uri": str(tmp_path / "checkpoints"),
            "status_path": str(tmp_path / "status.json"),
            "checkpoint_interval_s": 1.0,
            "actor_num_cpus": 0.25,
            "max_batch_records": 500,
            **stream,
        }
        # no batch classifier: these tests must not depend on what a local MLflow store holds
        # (tests/integration/test_serving.py serves one from a store of its own)
        classifier = msgspec.structs.replace(settings.scoring.classifier, model_uri="")
        scoring = msgspec.structs.replace(settings.scoring, classifier=classifier)
        return msgspec.structs.replace(settings, stream=msgspec.structs.replace(settings.stream, **options),
                                       scoring=scoring)

    return make



@pytest.fixture
def job_factory(ray_session, kafka_broker: str):
    jobs: list[StreamJob] = []

    def make(settings: Settings, actors: int = 2) -> StreamJob:
        job = StreamJob(settings, kafka_broker)
        job.start(actors)
        jobs.append(job)
        return job

    yield make
    for job in jobs:
        with contextlib.suppress(Exception):  # already drained by the test
            job.drain()


