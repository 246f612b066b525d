"""Alert-to-screen: how long after the scoring actor built an alert the analysts' console shows it, in Chromium.

Runs ``fraudstream demo --console`` (its own folder under ``--out``, demo options after ``--``) and opens the
console in Debian's Chromium through Playwright. A MutationObserver stamps each queue row when it enters the
page (the browser's clock); the alert's ``alert_time`` is stamped by the actor that built it (the same machine's
clock), so their difference is the whole path: the actor's send, the broker, the console's alerts reader, the
server-sent event, the page's drawing. Every row the page showed is measured (up to the 5,000 latest the
console keeps; warm-up backlog and live days alike). Also the first minutes as the analyst sees them: when the address is printed, the page opens, the
first row appears, and the status line at 60 s and 120 s. The demo is stopped with Ctrl-C once its report is
written (the console stays up after it).

Prints one JSON line: alert_to_screen_ms (p50, p95, p99, max over ``measured`` rows), timeline_s, exit code.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

#: Stamps each queue row with the browser's clock when it first enters the page.
OBSERVER = """
window.__seen = {};
new MutationObserver(() => {
  const now = Date.now();
  for (const row of document.querySelectorAll('#queue tbody tr[data-id]')) {
    if (!(row.dataset.id in window.__seen)) window.__seen[row.dataset.id] = now;
  }
}).observe(document, {subtree: true, childList: true});
"""


def _wait_for(path: Path, pattern: str, demo: subprocess.Popen[bytes], timeout_s: float) -> re.Match[str]:
    deadline = time.monotonic() + timeout_s
    while not (found := re.search(pattern, path.read_text(errors="replace"))):
        if demo.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the demo never printed {pattern!r}: see {path}")
        time.sleep(0.1)
    return found


def _percentiles(delays: list[int]) -> dict[str, int] | None:
    if not delays:
        return None
    ordered, n = sorted(delays), len(delays)
    return {"p50": ordered[n // 2], "p95": ordered[int(n * 0.95)], "p99": ordered[int(n * 0.99)], "max": ordered[-1]}


def measure(out: Path, chromium: str, demo_args: list[str]) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    stderr = out / "demo-stderr.txt"
    started = time.monotonic()
    demo = subprocess.Popen(
        [str(Path(sys.executable).parent / "fraudstream"), "demo", "--console", *demo_args], cwd=out,
        stdout=(out / "demo-stdout.txt").open("wb"), stderr=stderr.open("wb"), start_new_session=True,
        env={**os.environ, "COLUMNS": "160"},
    )  # fmt: skip
    timeline: list[tuple[str, float]] = []

    def mark(what: str) -> None:
        timeline.append((what, round(time.monotonic() - started, 1)))

    try:
        url = _wait_for(stderr, r"console: (http://\S+)", demo, 120).group(1)
        mark("address printed")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            context = browser.new_context(viewport={"width": 1500, "height": 950}, bypass_csp=True)
            context.add_init_script(OBSERVER)  # the page's CSP forbids inline scripts: bypassed for this probe
            page = context.new_page()
            page.goto(url)
            page.wait_for_selector("#app:not([hidden])", timeout=30_000)
            mark("page open")
            first_row = False
            checkpoints = [60.0, 120.0]
            while demo.poll() is None and "the console stays open" not in stderr.read_text(errors="replace"):
                rows = page.eval_on_selector_all("#queue tbody tr[data-id]", "rows => rows.length")
                if rows and not first_row:
                    first_row = True
                    mark("first alert row")
                if checkpoints and time.monotonic() - started >= checkpoints[0]:
                    checkpoints.pop(0)
                    mark(f"{rows} rows; status: {page.inner_text('#job')}")
                time.sleep(0.25)
            mark("report written")
            seen: dict[str, int] = page.evaluate("window.__seen")
            rows = page.evaluate("fetch('/api/alerts?limit=5000').then(r => r.json())")["alerts"]
            browser.close()
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGINT)  # Ctrl-C: the job drains, the console and everything stop
        code = demo.wait(180)
    delays = [seen[row["alert_id"]] - row["alert_time"] for row in rows if row["alert_id"] in seen]
    return {"rows_seen": len(seen), "measured": len(delays), "alert_to_screen_ms": _percentiles(delays),
            "timeline_s": timeline, "demo_exit": code}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench-console"), help="folder the demo runs in")
    parser.add_argument("--chromium", default=os.environ.get("FRAUDSTREAM_CHROMIUM", "/usr/bin/chromium"))
    parser.add_argument("demo_args", nargs="*", help="options for fraudstream demo (after --)")
    args = parser.parse_args(argv)
    if not Path(args.chromium).exists():
        raise SystemExit(f"no Chromium at {args.chromium}: apt-get install chromium (or pass --chromium)")
    print(json.dumps(measure(args.out, args.chromium, args.demo_args)))


if __name__ == "__main__":
    main()
