"""The HTML report of `fraudstream demo`: ``index.html``, ``summary.json`` and four PNG plots in one folder.

The page is self-contained (inline CSS, no JS, nothing fetched) and links the
plots relatively, so the folder can be zipped or served as it is. Only numpy,
scikit-learn and matplotlib (Agg) are used; the demo collects the numbers.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from itertools import cycle
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PLOTS = {
    "throughput.png": "Throughput (events/s) and total consumer lag; shaded bands are the demo's phases.",
    "latency.png": "End-to-end latency per event of the live days, from the transaction's Kafka timestamp to its "
    "micro-batch's alerts acknowledged by the broker; 50th, 95th and 99th percentiles.",
    "pr_curve.png": "Precision-recall of the fused score over the live days (every event's score, from replaying them "
    "through the same features and models in event time), with the alerts' operating points: the stream's and "
    "the replay's. Rules raise alerts whatever the score, so the points can sit off the curve.",
    "alerts_by_scenario.png": "Fraudulent transactions alerted and missed per scenario; false alerts on genuine ones.",
}


@dataclass
class ReportData:
    """Everything the demo report shows; times are seconds since the stream started."""

    title: str
    summary: dict[str, Any]  # JSON-serialisable; written as summary.json
    throughput: list[tuple[float, float, int]]  # (seconds, events/s, total lag in events) per status tick
    phases: list[tuple[str, float, float]]  # (phase name, start s, end s)
    latency_ms: np.ndarray  # end-to-end latency samples in ms (may be empty)
    pr_truth: np.ndarray | None  # bool per event of the live period (None: no PR data)
    pr_score: np.ndarray | None  # fused score per event, same length
    operating_points: list[tuple[str, float, float]]  # (label, recall, precision)
    scenarios: list[dict[str, Any]]  # {"scenario", "frauds", "alerted", "accounts", "caught"}
    false_alerts: int  # alerts on genuine transactions
    alerts_sample: list[dict[str, Any]]  # {"event_time", "account_id", "score", "decision", "truth", "reasons"}
    #: The same per scenario over the warm-up (the backlog replayed before the live days), shown beside them.
    warmup_scenarios: list[dict[str, Any]] = field(default_factory=list)
    warmup_false_alerts: int = 0


def write_report(out_dir: Path, data: ReportData) -> Path:
    """Write index.html, summary.json and the PNG plots into out_dir (created if missing); return index.html's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "summary.json").write_text(json.dumps(data.summary, indent=2, default=str) + "\n")
    throughput_png(data.throughput, data.phases, out_dir / "throughput.png")
    latency_png(data.latency_ms, out_dir / "latency.png")
    pr_png(data.pr_truth, data.pr_score, data.operating_points, out_dir / "pr_curve.png")
    scenarios_png(data.scenarios, data.false_alerts, out_dir / "alerts_by_scenario.png")
    index = out_dir / "index.html"
    index.write_text(render_html(data), encoding="utf-8")
    return index


# -- plots ----------------------------------------------------------------------------------------------------------


def _pyplot() -> ModuleType:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure: Figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path)
    _pyplot().close(figure)
    return path


def _message_png(path: Path, title: str, message: str) -> Path:
    figure, axes = _pyplot().subplots(figsize=(7, 4), dpi=100)
    axes.text(0.5, 0.5, message, ha="center", va="center", fontsize=13, color="dimgrey", transform=axes.transAxes)
    axes.set_axis_off()
    axes.set_title(title)
    return _save(figure, path)


def throughput_png(throughput: list[tuple[float, float, int]], phases: list[tuple[str, float, float]],
                   path: Path) -> Path:  # fmt: skip
    """Events/s as a line, total lag on a secondary axis, phases shaded and labelled."""
    if not throughput:
        return _message_png(path, "throughput", "no throughput samples")
    seconds, rate, lag = (np.asarray(column, dtype=float) for column in zip(*throughput))
    figure, axes = _pyplot().subplots(figsize=(7, 4), dpi=100)
    for index, (name, start, end) in enumerate(phases):
        axes.axvspan(start, end, color=("tab:green", "tab:purple", "tab:orange")[index % 3], alpha=0.1, lw=0)
        label_y = 0.97 - 0.07 * (index % 2)  # staggered, so that short neighbouring phases do not collide
        axes.text((start + end) / 2, label_y, name, ha="center", va="top", fontsize=9, color="dimgrey",
                  transform=axes.get_xaxis_transform())  # fmt: skip
    (rate_line,) = axes.plot(seconds, rate, color="tab:blue", label="events/s")
    lag_axes = axes.twinx()
    (lag_line,) = lag_axes.plot(seconds, lag, color="tab:red", linestyle="--", linewidth=1.2, label="total lag")
    axes.set_ylim(0, max(float(rate.max()), 1.0) * 1.25)  # headroom for the (staggered) phase labels
    lag_axes.set_ylim(0, max(float(lag.max()), 1.0) * 1.25)
    starts, ends = [start for _, start, _ in phases], [end for *_, end in phases]
    axes.set_xlim(min(float(seconds.min()), *starts), max(float(seconds.max()), *ends))
    axes.set_xlabel("seconds since the stream started")
    axes.set_ylabel("events/s", color="tab:blue")
    lag_axes.set_ylabel("total lag (events)", color="tab:red")
    axes.set_title("throughput and lag", pad=20)
    axes.legend(handles=[rate_line, lag_line], loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, fontsize=9,
                frameon=False)  # fmt: skip
    return _save(figure, path)


def latency_png(latency_ms: np.ndarray, path: Path) -> Path:
    """Histogram of the latency samples (log x when they span over two decades) with p50, p95 and p99."""
    samples = np.asarray(latency_ms, dtype=float)
    samples = samples[np.isfinite(samples)]
    if samples.size == 0:
        return _message_png(path, "end-to-end latency", "no latency samples")
    positive = samples[samples > 0]
    log_x = positive.size == samples.size and float(np.percentile(samples, 99) / np.percentile(samples, 1)) > 100
    bins = np.geomspace(positive.min(), positive.max(), 50) if log_x else 50
    figure, axes = _pyplot().subplots(figsize=(7, 4), dpi=100)
    axes.hist(samples, bins=bins, color="tab:blue", alpha=0.75)
    if log_x:
        axes.set_xscale("log")
    for q, color in ((50, "tab:green"), (95, "tab:orange"), (99, "tab:red")):
        value = float(np.percentile(samples, q))
        axes.axvline(value, color=color, linestyle="--", label=f"p{q} {value:,.1f} ms")
    axes.set_xlabel("latency (ms)" + (", log scale" if log_x else ""))
    axes.set_ylabel("events")
    axes.set_title(f"end-to-end latency ({samples.size:,} samples)")
    axes.legend(loc="upper right", fontsize=9)
    return _save(figure, path)


def pr_png(truth: np.ndarray | None, score: np.ndarray | None, operating_points: list[tuple[str, float, float]],
           path: Path) -> Path:  # fmt: skip
    """Precision-recall curve with AP, the base rate and the operating points marked."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    if truth is None or score is None or len(truth) == 0:
        return _message_png(path, "precision-recall", "no precision-recall data")
    truth = np.asarray(truth, dtype=bool)
    if not truth.any():
        return _message_png(path, "precision-recall", "no fraud in the live period")
    precision, recall, _ = precision_recall_curve(truth, score)
    figure, axes = _pyplot().subplots(figsize=(7, 4), dpi=100)
    ap = float(average_precision_score(truth, score))
    axes.step(recall, precision, where="post", label=f"fused score (AP {ap:.3f})")
    axes.axhline(truth.mean(), color="grey", linestyle="--", label=f"fraud rate {truth.mean():.2%}")
    # points can sit on top of each other (the stream and its replay agree): told apart by marker, named in the legend
    styles = [("o", "tab:red", 9), ("x", "black", 8), ("s", "tab:green", 6), ("^", "tab:purple", 7)]
    for (label, point_recall, point_precision), (marker, color, size) in zip(operating_points, cycle(styles)):
        axes.plot(point_recall, point_precision, marker, color=color, markersize=size, markeredgewidth=2,
                  label=f"{label}: recall {point_recall:.2f}, precision {point_precision:.2f}")
    axes.set_xlabel("recall")
    axes.set_ylabel("precision")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.05)
    axes.set_title(f"precision-recall, live period ({truth.size:,} events, {int(truth.sum()):,} frauds)")
    axes.legend(loc="lower left", fontsize=9)
    return _save(figure, path)


def scenarios_png(scenarios: list[dict[str, Any]], false_alerts: int, path: Path) -> Path:
    """Stacked horizontal bars per scenario (alerted, missed) with the account catch rate; a bar for false alerts."""
    if not scenarios and not false_alerts:
        return _message_png(path, "alerts by scenario", "no fraud scenarios and no false alerts")
    names = [f"{row['scenario']}\n{row['caught']}/{row['accounts']} accounts caught" for row in scenarios]
    names.append("genuine\n(false alerts)")
    alerted = np.array([int(row["alerted"]) for row in scenarios] + [0])
    missed = np.array([int(row["frauds"]) - int(row["alerted"]) for row in scenarios] + [0])
    false = np.array([0] * len(scenarios) + [false_alerts])
    figure, axes = _pyplot().subplots(figsize=(7, max(3.0, 1.4 + 0.6 * len(names))), dpi=100)
    rows = np.arange(len(names))
    axes.barh(rows, alerted, color="tab:blue", label="frauds alerted")
    axes.barh(rows, missed, left=alerted, color="lightgrey", label="frauds missed")
    axes.barh(rows, false, color="tab:red", label="false alerts")
    widest = max(int((alerted + missed + false).max()), 1)
    for row, scenario in enumerate(scenarios):
        frauds = int(scenario["frauds"])
        note = f"{int(scenario['alerted']):,}/{frauds:,} alerted" if frauds else "no frauds"
        axes.text(frauds + widest * 0.01, row, note, va="center", fontsize=9)
    axes.text(false_alerts + widest * 0.01, len(names) - 1, f"{false_alerts:,}", va="center", fontsize=9)
    axes.set_yticks(rows, names, fontsize=9)
    axes.invert_yaxis()
    axes.set_xlim(0, widest * 1.3)
    axes.set_xlabel("transactions")
    axes.set_title("alerts by fraud scenario", pad=20)
    axes.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, fontsize=8.5, frameon=False)
    return _save(figure, path)


# -- HTML -----------------------------------------------------------------------------------------------------------

_CSS = """
body { font: 15px/1.45 system-ui, sans-serif; color: #222; max-width: 980px; margin: 2em auto; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.8em; border-bottom: 1px solid #ddd; }
.headline { display: flex; flex-wrap: wrap; gap: .6em; } .details { display: flex; flex-wrap: wrap; gap: 0 2em; }
h3 { font-size: 1em; margin: 1.2em 0 0; }
.stat { border: 1px solid #ddd; border-radius: 6px; padding: .4em .8em; background: #fafafa; }
.stat .key { font-size: .8em; color: #666; } .stat .value { font-size: 1.15em; font-weight: 600; }
table { border-collapse: collapse; margin: .6em 0; font-size: .9em; }
th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1.2em 0; } img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: .85em; color: #555; }
"""


def _text(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:,.1f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return html.escape(str(value))


def _is_table(value: Any) -> bool:
    """A dict, or a list holding a dict or a list: shown as a table, not as a headline value."""
    return isinstance(value, dict) or (isinstance(value, list) and any(isinstance(v, dict | list) for v in value))


def _value(value: Any) -> str:
    if isinstance(value, dict):
        rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{_value(v)}</td></tr>" for k, v in value.items())
        return f"<table>{rows}</table>"
    if isinstance(value, list) and all(isinstance(item, dict) for item in value):
        keys = list(dict.fromkeys(k for item in value for k in item))
        return _table([str(k) for k in keys], [[_value(item.get(k)) for k in keys] for item in value], numeric=set())
    if isinstance(value, list):
        return ", ".join(_value(item) if _is_table(item) else _text(item) for item in value)
    return _text(value)


def _table(header: list[str], rows: list[list[str]], numeric: set[int]) -> str:
    """An HTML table of already escaped cells; the columns in numeric are right-aligned."""
    head = "".join(f"<th>{html.escape(name)}</th>" for name in header)
    cells = ('<td class="num">{}</td>', "<td>{}</td>")
    body = "".join(
        "<tr>" + "".join(cells[i not in numeric].format(cell) for i, cell in enumerate(row)) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def render_html(data: ReportData) -> str:
    """The report page: headline numbers, the plots, the per-scenario table, the alerts sample, then the details."""
    flat = {k: v for k, v in data.summary.items() if not _is_table(v)}
    nested = {k: v for k, v in data.summary.items() if _is_table(v)}
    stats = "".join(
        f'<div class="stat"><div class="key">{html.escape(str(k))}</div><div class="value">{_value(v)}</div></div>'
        for k, v in flat.items()
    )
    details = "".join(f"<div><h3>{html.escape(str(k))}</h3>{_value(v)}</div>" for k, v in nested.items())
    figures = "".join(
        f'<figure><img src="{name}" alt="{html.escape(name)}"><figcaption>{html.escape(caption)}</figcaption></figure>'
        for name, caption in PLOTS.items()
    )
    scenario_rows: list[list[str]] = []
    periods = [("live", data.scenarios, data.false_alerts)]
    if data.warmup_scenarios or data.warmup_false_alerts:
        periods.append(("warm-up", data.warmup_scenarios, data.warmup_false_alerts))
    for period, rows, false_alerts in periods:
        scenario_rows += [
            [period, _text(row["scenario"]), _text(row["frauds"]), _text(row["alerted"]),
             f"{row['alerted'] / row['frauds']:.1%}" if row["frauds"] else "–", _text(row["accounts"]),
             _text(row["caught"])]
            for row in rows
        ]  # fmt: skip
        scenario_rows.append([period, "genuine (false alerts)", "", _text(false_alerts), "", "", ""])
    header = ["period", "scenario", "frauds", "alerted", "recall", "accounts", "caught"]
    scenarios = _table(header, scenario_rows, numeric={2, 3, 4, 5, 6})
    alert_rows = [
        [_text(row.get("event_time", "")), _text(row.get("account_id", "")),
         f"{float(row['score']):.3f}" if "score" in row else "", _text(row.get("decision", "")),
         _text(row.get("truth", "")), _text(row.get("reasons", ""))]
        for row in data.alerts_sample
    ]  # fmt: skip
    alerts = _table(["event time", "account", "score", "decision", "truth", "reasons"], alert_rows, numeric={2})
    title = html.escape(data.title)
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{title}</title>\n'
        f"<style>{_CSS}</style>\n</head>\n<body>\n<h1>{title}</h1>\n"
        f'<div class="headline">{stats}</div>\n<h2>Plots</h2>\n{figures}\n'
        f"<h2>Fraud scenarios</h2>\n{scenarios}\n"
        f"<h2>Sample of alerts</h2>\n{alerts if alert_rows else '<p>No alerts.</p>'}\n"
        f'<h2>Details (summary.json)</h2>\n<div class="details">{details}</div>\n</body>\n</html>\n'
    )
