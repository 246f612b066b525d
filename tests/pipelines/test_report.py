"""The demo report: every file is written, the PNGs are real images, the page links them and escapes its text."""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from pipelines.report import ReportData, write_report

PNGS = ("throughput.png", "latency.png", "pr_curve.png", "alerts_by_scenario.png")
SCRIPT = "<script>alert('x')</script>"


def _data(seed: int = 7, events: int = 2000) -> ReportData:
    rng = np.random.default_rng(seed)
    truth = rng.random(events) < 0.02
    score = np.where(truth, rng.beta(5, 2, events), rng.beta(1.5, 8, events))
    seconds = np.arange(1.0, 76.0)
    rate = np.where(seconds < 41.2, 2500 + rng.normal(0, 150, seconds.size), 800 + rng.normal(0, 60, seconds.size))
    lag = np.maximum(0, 40_000 - 900 * seconds).astype(int)
    scenarios = [
        {"scenario": "card_testing", "frauds": 40, "alerted": 30, "accounts": 8, "caught": 7},
        {"scenario": "account_takeover", "frauds": 12, "alerted": 5, "accounts": 4, "caught": 2},
        {"scenario": "bust_out", "frauds": 0, "alerted": 0, "accounts": 0, "caught": 0},
    ]
    sample = [
        {"event_time": f"2026-12-02T07:{10 + i:02d}:00Z", "account_id": f"acc-{i}", "score": float(score[i]),
         "decision": "review", "truth": "genuine", "reasons": "amount_zscore"}
        for i in range(5)
    ]  # fmt: skip
    sample[2]["reasons"] = SCRIPT
    return ReportData(
        title="fraudstream demo, 2026-12-02 07:10 UTC",
        summary={"events": events, "alerts": 71, "precision": 0.7123, "ap": None, "topics": ["transactions", "alerts"],
                 "models": {"classifier": "v3", "anomaly": "hst"}, "scenarios_live": scenarios[:2]},
        throughput=[(float(s), float(r), int(q)) for s, r, q in zip(seconds, rate, lag)],
        phases=[("warm-up", 0.0, 41.2), ("live", 41.2, 75.0)],
        latency_ms=rng.lognormal(np.log(40), 1.2, events),
        pr_truth=truth,
        pr_score=score,
        operating_points=[("live alerts", 0.68, 0.71), ("block", 0.4, 0.93)],
        scenarios=scenarios,
        false_alerts=21,
        alerts_sample=sample,
        warmup_scenarios=[{"scenario": "compromised_terminal", "frauds": 64, "alerted": 48, "accounts": 9, "caught": 8}],
        warmup_false_alerts=13,
    )


def _assert_pngs(folder: Path) -> None:
    for name in PNGS:
        path = folder / name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        image = imread(path)
        assert image.ndim == 3 and image.shape[2] in (3, 4), (name, image.shape)
        assert image.shape[0] > 100 and image.shape[1] > 100, (name, image.shape)
        assert image.std() > 0, f"{name} is blank"


def test_report_writes_every_file(tmp_path: Path) -> None:
    data = _data()
    index = write_report(tmp_path / "report", data)

    assert index == tmp_path / "report" / "index.html"
    _assert_pngs(index.parent)
    assert json.loads((index.parent / "summary.json").read_text()) == data.summary


def test_page_links_plots_and_escapes_text(tmp_path: Path) -> None:
    data = _data()
    page = write_report(tmp_path, data).read_text(encoding="utf-8")

    assert page.startswith("<!DOCTYPE html>")
    for name in PNGS:
        assert f'<img src="{name}"' in page
    for row in data.scenarios:
        assert html.escape(row["scenario"]) in page
    assert "75.0%" in page and "41.7%" in page  # recall of card_testing (30/40) and account_takeover (5/12)
    # the warm-up's scenarios beside the live days' (the backlog replayed before them)
    assert "<td>warm-up</td><td>compromised_terminal</td>" in page and "<td>live</td><td>card_testing</td>" in page
    assert html.escape(SCRIPT) in page
    assert "<script>" not in page
    assert "transactions, alerts" in page and "<th>classifier</th><td>v3</td>" in page and "0.7123" in page
    assert "2,000" in page  # the headline's event count
    assert "[{" not in page and "None" not in page  # a list of dicts is a table, None a dash, never raw JSON
    assert html.escape(data.title) in page
    assert "http://" not in page and "https://" not in page


@pytest.mark.parametrize("truth", [None, np.zeros(50, dtype=bool)], ids=["no-pr-data", "no-positives"])
def test_empty_inputs_still_write_every_file(tmp_path: Path, truth: np.ndarray | None) -> None:
    data = ReportData(
        title="empty <demo>",
        summary={},
        throughput=[],
        phases=[],
        latency_ms=np.array([]),
        pr_truth=truth,
        pr_score=None if truth is None else np.linspace(0, 1, truth.size),
        operating_points=[],
        scenarios=[],
        false_alerts=0,
        alerts_sample=[],
    )
    index = write_report(tmp_path, data)

    _assert_pngs(tmp_path)
    assert json.loads((tmp_path / "summary.json").read_text()) == {}
    page = index.read_text(encoding="utf-8")
    assert "empty &lt;demo&gt;" in page and "<demo>" not in page
