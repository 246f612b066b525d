"""The console in a real browser: Playwright driving Debian's Chromium (``/usr/bin/chromium``, no browser download)
against the console on the embedded broker. An alert produced to the topic appears on the page within 2 s; an
analyst marks it fraud and a label lands on the labels topic; a viewer sees no verdict buttons and the endpoint
answers 403; a screenshot of the queue is saved as an artifact (``$FRAUDSTREAM_ARTIFACTS`` or the test's tmp dir).

Without Chromium or Playwright the tests skip with one line; with ``CI=true`` they run (.ci/run installs both).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from configs import ConsoleSettings, ConsoleUser, RuleSettings, Settings
from contracts import decode_label
from pipelines.console.auth import hash_password
from pipelines.console.kafka_io import KafkaLabelSink, alerts_feed
from synthetic import generate
from tests.integration.streamkit import produce, wait_scored
from tests.integration.test_console import _produce, _read_labels
from tests.pipelines.console.consolekit import PASSWORDS, Clock, alert, serving

pytestmark = pytest.mark.integration

CHROMIUM = os.environ.get("FRAUDSTREAM_CHROMIUM", "/usr/bin/chromium")


def _missing() -> str | None:
    if not Path(CHROMIUM).exists():
        return f"no Chromium at {CHROMIUM}: apt-get install chromium (or set FRAUDSTREAM_CHROMIUM)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright is not installed: pip install -e '.[dev]'"
    return None


@contextlib.contextmanager
def _chromium() -> Iterator[Any]:
    """Debian's Chromium under Playwright (its sync API runs an event loop in this thread until the block ends:
    code that calls asyncio.run meanwhile goes through :func:`_threaded`)."""
    missing = _missing()
    if missing is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and {missing}")
        pytest.skip(missing)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()


def _threaded(call: Callable[..., Any], *args: Any) -> Any:
    """``call(*args)`` in another thread (one with no event loop running), its result."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(call, *args).result(timeout=60)


def _settings(isolated_settings: Callable[..., Settings], tmp_path: Path) -> Settings:
    users = {
        "ana": ConsoleUser(password_hash=hash_password(PASSWORDS["ana"], n=2**10), role="analyst"),
        "vic": ConsoleUser(password_hash=hash_password(PASSWORDS["vic"], n=2**10), role="viewer"),
    }
    settings = isolated_settings()
    console = ConsoleSettings(users=users, audit_path=str(tmp_path / "verdicts.jsonl"),  # type: ignore[arg-type]
                              status_interval_s=0.2)  # fmt: skip
    stream = msgspec.structs.replace(settings.stream, status_path=str(tmp_path / "status.json"))
    return msgspec.structs.replace(settings, console=console, stream=stream)


def _live(item: Any, alert_ms: int) -> Any:
    """``item`` as an alert of now: event time 120 ms before ``alert_ms``, ingested 41 ms before it."""
    return msgspec.structs.replace(item, event_time=alert_ms - 120, ingest_time=alert_ms - 41, alert_time=alert_ms)


def _sign_in(page: Any, url: str, user: str) -> None:
    page.goto(url)
    page.fill("#login-form input[name=username]", user)
    page.fill("#login-form input[name=password]", PASSWORDS[user])
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#app:not([hidden])", timeout=5_000)
    page.wait_for_selector("#live.on", timeout=5_000)  # the event stream is open


def _artifacts(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("FRAUDSTREAM_ARTIFACTS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_an_alert_reaches_the_page_and_an_analysts_fraud_verdict_is_a_label(
    isolated_settings: Callable[..., Settings], kafka_broker: str, tmp_path: Path
) -> None:
    settings = _settings(isolated_settings, tmp_path)
    sink = KafkaLabelSink(settings, kafka_broker)
    with serving(settings, sink=sink, feed=alerts_feed(settings, kafka_broker), clock=Clock(time.time()),
                 on_shutdown=sink.stop) as console, _chromium() as browser:  # fmt: skip
        page = browser.new_page(viewport={"width": 1400, "height": 800})
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        _sign_in(page, f"http://127.0.0.1:{console.port}/", "ana")

        now_ms = int(time.time() * 1000)
        earlier = [_live(alert(n, f"acc-{n}{n}", score=0.99 + n / 1000, rules=rules), now_ms - 60_000 * n)
                   for n, rules in ((3, ()), (4, ("bust_out",)), (5, ()))]  # fmt: skip
        _threaded(_produce, settings, kafka_broker, *earlier)
        page.wait_for_selector('#queue tr[data-id="alert-3"]', timeout=5_000)
        flagged = _live(alert(7, "acc-77", decision="block", rules=("card_testing",), challenger=0.91), now_ms)
        start = time.monotonic()
        _threaded(_produce, settings, kafka_broker, flagged)
        page.wait_for_selector('#queue tr[data-id="alert-7"]', timeout=5_000)
        shown_s = time.monotonic() - start
        assert shown_s < 2.0, f"the alert took {shown_s:.2f} s to appear"
        row = page.inner_text('#queue tr[data-id="alert-7"]')
        assert "acc-77" in row and "block" in row and "41 ms" in row
        # newest alert time first, however they arrived (alert-4 was sent before alert-3 is older)
        order = page.eval_on_selector_all("#queue tbody tr", "rows => rows.map(r => r.dataset.id)")
        assert order == ["alert-7", "alert-3", "alert-4", "alert-5"], order
        assert not page.is_visible("#login")  # signed in: the sign-in form is gone

        page.click('#queue tr[data-id="alert-7"]')
        page.wait_for_selector("#detail:not([hidden])", timeout=5_000)
        assert "card_testing" in page.inner_text("#detail") or "card testing" in page.inner_text("#detail")
        page.screenshot(path=str(_artifacts(tmp_path) / "console-queue.png"), full_page=True)
        page.click("#mark-fraud")
        page.wait_for_selector("#verdict-now:has-text('fraud')", timeout=5_000)
        assert not errors, errors

    records = _read_labels(settings, kafka_broker, wanted=1)
    assert len(records) == 1
    label = decode_label(records[0].value)  # type: ignore[attr-defined]
    assert records[0].key == b"acc-77"  # type: ignore[attr-defined]
    assert (label.transaction_id, label.label) == ("tx-7", "fraud")
    assert dict(records[0].headers)["fraudstream-analyst"] == b"ana"  # type: ignore[attr-defined]


def test_a_viewer_sees_no_verdict_buttons_and_the_endpoint_refuses(
    isolated_settings: Callable[..., Settings], kafka_broker: str, tmp_path: Path
) -> None:
    settings = _settings(isolated_settings, tmp_path)
    sink = KafkaLabelSink(settings, kafka_broker)
    _produce(settings, kafka_broker, msgspec.structs.replace(alert(8, "acc-88"), alert_time=int(time.time() * 1000)))
    with serving(settings, sink=sink, feed=alerts_feed(settings, kafka_broker), clock=Clock(time.time()),
                 on_shutdown=sink.stop) as console, _chromium() as browser:  # fmt: skip
        page = browser.new_page()
        _sign_in(page, f"http://127.0.0.1:{console.port}/", "vic")
        page.wait_for_selector('#queue tr[data-id="alert-8"]', timeout=10_000)
        page.click('#queue tr[data-id="alert-8"]')
        page.wait_for_selector("#detail:not([hidden])", timeout=5_000)
        assert not page.is_visible("#mark-fraud") and not page.is_visible("#mark-genuine")
        # the endpoint itself refuses a viewer, whatever the page shows
        csrf = page.evaluate("fetch('/api/session').then(r => r.json()).then(s => s.csrf)")
        status = page.evaluate(
            """csrf => fetch('/api/alerts/alert-8/verdict', {method: 'POST', headers: {'Content-Type':
               'application/json', 'X-CSRF-Token': csrf}, body: JSON.stringify({verdict: 'fraud'})}).then(r => r.status)""",
            csrf,
        )
        assert status == 403
        assert console.sink is sink


@pytest.mark.slow
def test_an_analysts_fraud_verdict_in_the_browser_is_learned_by_the_running_jobs_online_classifier(
    stream_settings: Callable[..., Settings], local_settings: Settings, kafka_broker: str,
    job_factory: Callable[..., Any], tmp_path: Path,
) -> None:
    """The loop closed end to end: real actors score a replayed history (event time in January, long before the
    wall clock) and alert; the analyst marks one of those alerts fraud in Chromium; the partition that scored it
    reads the label and its online classifier learns it (``labels_learned`` in the job's status)."""
    base = stream_settings(partitions=2, status_interval_s=0.2)
    rule = RuleSettings(name="big_amount", when="amount > 300", action="review", score=0.97)
    scoring = msgspec.structs.replace(base.scoring, rules_file="", rules=(rule,))
    settings = msgspec.structs.replace(_settings(lambda: base, tmp_path), scoring=scoring)
    history = generate(msgspec.structs.replace(local_settings.generator, accounts=300, days=8, seed=19))
    produce(settings, kafka_broker, history.transactions, None)  # no labels: only the analyst's will come
    job = job_factory(settings, actors=2)
    done = threading.Event()
    runner = threading.Thread(target=job.run, kwargs={"until": lambda _: done.is_set()}, daemon=True)
    runner.start()
    sink = KafkaLabelSink(settings, kafka_broker)
    try:
        scored = wait_scored(job, history.transactions.num_rows)
        assert scored.totals.alerts > 0 and sum(p.labels_learned for p in scored.partitions.values()) == 0
        with serving(settings, sink=sink, feed=alerts_feed(settings, kafka_broker), clock=Clock(time.time()),
                     on_shutdown=sink.stop) as console, _chromium() as browser:  # fmt: skip
            page = browser.new_page(viewport={"width": 1400, "height": 800})
            _sign_in(page, f"http://127.0.0.1:{console.port}/", "ana")
            page.wait_for_selector("#queue tbody tr[data-id]", timeout=10_000)
            alert_id = page.get_attribute("#queue tbody tr[data-id]", "data-id")
            page.click(f'#queue tr[data-id="{alert_id}"]')
            page.wait_for_selector("#detail:not([hidden])", timeout=5_000)
            page.click("#mark-fraud")
            page.wait_for_selector("#verdict-now:has-text('fraud')", timeout=5_000)
            judged = console.service.alert(str(alert_id))
            # the job's status (its status file, as the console reads it) counts the verdict learned
            page.wait_for_selector("#job:has-text('labels learned 1')", timeout=30_000)
        status = job.status()
        learned = status.totals.labels_learned
        assert judged.source is not None
        partition = status.partitions[str(judged.source.partition)]
        assert (learned, partition.labels_learned, partition.labels_applied) == (1, 1, 1)
        assert partition.held_labels == 0
    finally:
        done.set()
        runner.join(60)
