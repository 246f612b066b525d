"""`fraudstream demo` end to end, as a user runs it: a process of its own with an embedded broker, a local Ray
and a local MLflow store; twice in a row (the second with ``--console``, worked over HTTP as the page does), and
once stopped with Ctrl-C (SIGINT to its process group, as a terminal sends it). Every process it started must be
gone when it ends."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from tests.pipelines.console.consolekit import Client

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
#: Small enough for the suite, large enough to train on (10 days before the live ones) and to see fraud live.
SMALL = ["--accounts", "1000", "--days", "14", "--live-days", "3", "--rate", "1500"]
PLOTS = ("throughput.png", "latency.png", "pr_curve.png", "alerts_by_scenario.png")
#: Command-line words of the processes a demo starts: Ray's, the broker's, the demo's own.
OURS = ("raylet", "gcs_server", "ray::", "default_worker.py", "tansu", "fraudstream demo", "fsdemo-ray-")


def _processes() -> dict[int, str]:
    """Live processes that look like a demo's (pid -> command line); zombies have no command line."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(word in command for word in OURS):
            found[int(entry.name)] = command.strip()
    return found


def _left_behind(before: dict[int, str], wait_s: float = 15.0) -> dict[int, str]:
    deadline = time.monotonic() + wait_s
    while True:
        new = {pid: cmd for pid, cmd in _processes().items() if pid not in before}
        if not new or time.monotonic() > deadline:
            return new
        time.sleep(0.5)


def _env() -> dict[str, str]:
    venv = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{venv}{os.pathsep}{os.environ.get('PATH', '')}", "COLUMNS": "120",
           "RAY_USAGE_STATS_ENABLED": "0", "MLFLOW_DISABLE_TELEMETRY": "true"}  # fmt: skip
    env.pop("RAY_ADDRESS", None)
    return env


def _demo(cwd: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "fraudstream"), "demo", *SMALL, *args], cwd=cwd, env=_env(), text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip


def _check_report(report: Path) -> dict:
    folder = report.parent
    for name in ("index.html", "summary.json", *PLOTS):
        assert (folder / name).is_file(), f"{name} missing from {folder}"
    for name in PLOTS:
        assert (folder / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (folder / "index.html").read_text()
    assert all(f'src="{name}"' in page for name in PLOTS)
    return json.loads((folder / "summary.json").read_text())


class _Lines:
    """The lines a process writes to stdout and stderr, read as they come (threads)."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.out: list[str] = []
        self.err: list[str] = []
        self._threads = [threading.Thread(target=self._read, args=(stream, into), daemon=True)
                         for stream, into in ((process.stdout, self.out), (process.stderr, self.err))]  # fmt: skip
        for thread in self._threads:
            thread.start()

    @staticmethod
    def _read(stream: Any, into: list[str]) -> None:
        for line in stream:
            into.append(line)

    def wait_for(self, into: list[str], pattern: str, timeout_s: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout_s
        while True:
            for line in list(into):
                if found := re.search(pattern, line):
                    return found
            assert self.process.poll() is None, f"the demo ended:\n{''.join(self.err)[-4000:]}"
            assert time.monotonic() < deadline, f"no {pattern!r} in {timeout_s} s:\n{''.join(self.err)[-4000:]}"
            time.sleep(0.2)

    def end(self, timeout_s: float) -> tuple[str, str]:
        self.process.wait(timeout_s)
        for thread in self._threads:
            thread.join(10)
        return "".join(self.out), "".join(self.err)


def _work_the_console(tmp_path: Path) -> tuple[str, str]:
    """``demo --console``: the console answers within seconds, fills with the actors' alerts, takes a verdict;
    after the report it stays up with the scoring job running again, until Ctrl-C (then exit 0)."""
    started = time.monotonic()
    demo = _demo(tmp_path, "--console", "--console-port", "0")
    lines = _Lines(demo)
    try:
        url = lines.wait_for(lines.err, r"console: (http://\S+)", 60).group(1)
        page = Client(urllib.parse.urlsplit(url).port or 0)
        assert time.monotonic() - started < 60 and page.open_session().body["open"] is True
        deadline = time.monotonic() + 300
        while not (alerts := page.get("/api/alerts?limit=5").body["alerts"]):
            assert time.monotonic() < deadline and demo.poll() is None, "no alert reached the console"
            time.sleep(0.5)
        judged = alerts[0]["alert_id"]
        given = page.post(f"/api/alerts/{judged}/verdict", {"verdict": "fraud"}).body
        assert (given["verdict"], given["alert_id"]) == ("fraud", judged)
        line = json.loads(lines.wait_for(lines.out, r"^\{.*\"report\".*\}$", 600).group(0))
        assert line["console"] == url and line["interrupted"] is False
        lines.wait_for(lines.err, r"the console stays open", 120)
        deadline = time.monotonic() + 60
        while (status := page.get("/api/status").body)["state"] != "running":  # the job again, from its checkpoints
            assert time.monotonic() < deadline, status
            time.sleep(0.5)
        assert status["scored"] > 0 and status["labels_learned"] > 0
        assert page.get(f"/api/alerts/{judged}").body["alert"]["verdict"]["verdict"] == "fraud"
        audit = tmp_path / Path(line["report"]).parent / "run" / "verdicts.jsonl"
        assert json.loads(audit.read_text().splitlines()[-1])["alert_id"] == judged
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGINT)  # Ctrl-C: the job drains, the console and everything stop
    out, err = lines.end(120)
    assert demo.returncode == 0, err[-4000:]
    assert "Traceback" not in err
    return out, err


def test_demo_runs_twice_in_a_row_and_leaves_nothing_running(tmp_path: Path) -> None:
    before = _processes()
    summaries = []
    for run in range(2):
        if run == 0:
            demo = _demo(tmp_path)
            out, err = demo.communicate(timeout=600)
            assert demo.returncode == 0, f"run {run + 1} failed:\n{err[-4000:]}"
        else:
            out, err = _work_the_console(tmp_path)
        line = json.loads(out.strip().splitlines()[-1])
        assert line["interrupted"] is False
        summary = _check_report(tmp_path / line["report"])
        summaries.append((line["report"], summary))
        assert not _left_behind(before), f"run {run + 1} left processes behind"
    (first, one), (second, two) = summaries
    assert first != second  # a folder of its own per run
    for summary in (one, two):
        history = summary["history"]
        # every transaction streamed was scored, and the alerts read back match the actors' count
        assert summary["events_scored"] == history["transactions"] == summary["stream"]["scored"]
        assert summary["alerts"] == summary["stream"]["alerts"] > 0
        assert summary["alerts_read"]["not_in_history"] == 0
        live = summary["ground_truth"]["live"]
        assert live["scored"] == history["live_transactions"] and live["frauds"] > 0
        assert live["precision"] is not None and live["recall"] is not None
        assert summary["latency_ms"]["samples"] > 0 and summary["latency_ms"]["p50"] > 0
        assert summary["model"]["version"] == "1" and summary["model"]["alias"] == "champion"
        assert summary["replay"]["rows"] == history["live_transactions"]
        assert {row["scenario"] for row in summary["scenarios_live"]} <= {
            "card_testing", "account_takeover", "impossible_travel", "bust_out", "compromised_terminal"}
        assert summary["wall_s"] > 0 and summary["interrupted"] is False
    # the same seed, the same world: both runs scored the same transactions
    assert one["history"] == two["history"]


def test_ctrl_c_drains_writes_what_it_has_and_stops_everything(tmp_path: Path) -> None:
    before = _processes()
    demo = _demo(tmp_path, "--rate", "300")  # slow live days: the signal lands while streaming
    deadline = time.monotonic() + 300
    while not list(tmp_path.glob("reports/demo-*/run/status.json")):
        assert demo.poll() is None, f"the demo ended before streaming:\n{demo.stderr.read()[-4000:]}"
        assert time.monotonic() < deadline, "the demo never started streaming"
        time.sleep(0.5)
    time.sleep(3)
    os.killpg(demo.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole foreground group
    out, err = demo.communicate(timeout=120)
    assert demo.returncode == 130, err[-4000:]
    assert "Traceback" not in err
    line = json.loads(out.strip().splitlines()[-1])
    assert line["interrupted"] is True
    summary = _check_report(tmp_path / line["report"])
    assert summary["interrupted"] is True
    assert 0 < summary["events_scored"] < summary["history"]["transactions"]
    assert "replay" not in summary  # no replay after an interrupt
    assert not _left_behind(before), "Ctrl-C left processes behind"
