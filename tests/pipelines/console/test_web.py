"""The console's web app on a real server: sign-in, roles, CSRF, sessions, the queue, details, verdicts, events,
and a clear 4xx JSON for every kind of bad request."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest

from actors.messages import ServingStatus, job_status
from configs import MlflowSettings
from contracts import decode_label
from pipelines.console.registry import RegistryWatch
from pipelines.console.verdicts import ALERT_HEADER, ANALYST_HEADER, GIVEN_HEADER, SOURCE_HEADER
from pipelines.stream import write_status
from tests.actors.fakes import actor_status, partition_status
from tests.pipelines.console.consolekit import ListSink, alert, console_settings, serving


def test_the_page_and_its_assets_are_served_from_the_package_with_a_strict_content_policy(tmp_path: Path) -> None:
    with serving(console_settings(tmp_path)) as console:
        client = console.client()
        page = client.get("/")
        assert page.status == 200 and page.headers["content-type"].startswith("text/html")
        assert '<script src="/static/console.js"' in page.body and "http://" not in page.body
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert page.headers["x-frame-options"] == "DENY"
        script = client.get("/static/console.js")
        assert script.status == 200 and script.headers["content-type"].startswith("text/javascript")
        assert "EventSource" in script.body and "innerHTML" not in script.body  # values go in as text only
        assert client.get("/static/console.css").status == 200
        assert client.get("/static/../command.py").status == 404


def test_sign_in_gives_a_session_with_the_role_from_the_config(tmp_path: Path) -> None:
    with serving(console_settings(tmp_path)) as console:
        client = console.client()
        assert client.get("/api/alerts").error == "not signed in, or the session expired: sign in again"
        wrong = client.post("/api/login", {"username": "ana", "password": "nope"})
        unknown = client.post("/api/login", {"username": "nobody", "password": "nope"})
        assert wrong.status == unknown.status == 401 and wrong.error == unknown.error == "wrong user name or password"
        session = client.login("vic").body
        assert (session["user"], session["role"], session["may_give_verdicts"], session["open"]) == (
            "vic", "viewer", False, False)
        assert "HttpOnly" in client.request("POST", "/api/login", {"username": "vic", "password": "vic-secret-1"}
                                            ).headers["set-cookie"]  # fmt: skip
        assert client.get("/api/session").body["user"] == "vic"
        assert client.get("/api/alerts").status == 200


def test_wrong_passwords_for_a_user_are_throttled(tmp_path: Path) -> None:
    with serving(console_settings(tmp_path)) as console:
        client = console.client()
        for _ in range(5):
            assert client.post("/api/login", {"username": "ana", "password": "guess"}).status == 401
        throttled = client.post("/api/login", {"username": "ana", "password": "ana-secret-1"})
        assert throttled.status == 429 and throttled.error == "too many wrong passwords for this user: try again in 300 s"
        client.login("vic")  # other users are not held up
        console.clock.now += 301
        client.login("ana")


def test_a_session_expires_and_a_signed_out_one_stops_at_once(tmp_path: Path) -> None:
    settings = console_settings(tmp_path, session_ttl_s=60.0)
    with serving(settings) as console:
        client = console.client()
        client.login("ana")
        console.clock.now += 59
        assert client.get("/api/alerts").status == 200
        console.clock.now += 2
        assert client.get("/api/alerts").status == 401
        client.login("ana")
        kept = client.cookie
        assert client.post("/api/logout", {}).body == {"signed_out": True}
        client.cookie = kept  # the old cookie, replayed
        assert client.get("/api/alerts").status == 401


def test_the_queue_is_newest_first_and_filtered_like_alerts_tail(tmp_path: Path) -> None:
    with serving(console_settings(tmp_path)) as console:
        console.feed.put(alert(1, "acc-1", score=0.996), alert(2, "acc-2", decision="block", score=0.9997,
                         rules=("card_testing",)), alert(3, "acc-1", score=0.998))  # fmt: skip
        console.wait_kept(3)
        client = console.client()
        client.login("vic")
        everything = client.get("/api/alerts").body
        assert [row["alert_id"] for row in everything["alerts"]] == ["alert-3", "alert-2", "alert-1"]
        assert everything["kept"] == 3
        row = everything["alerts"][1]
        assert (row["score"], row["decision"], row["rules"], row["latency_ms"]) == (0.9997, "block", ["card_testing"], 12)
        assert row["model_versions"] == {"anomaly": "hst-1", "classifier": "fraud-classifier/3"}
        assert row["why"] == "rule card_testing, amount_ratio=4.5" and row["verdict"] is None

        def ids(query: str) -> list[str]:
            answer = client.get(f"/api/alerts?{query}")
            assert answer.status == 200, answer.body
            return [r["alert_id"] for r in answer.body["alerts"]]

        assert ids("decision=block") == ["alert-2"]
        assert ids("min_score=0.997") == ["alert-3", "alert-2"]
        assert ids("rule=card_testing") == ["alert-2"]
        assert ids("account=acc-1") == ["alert-3", "alert-1"]
        assert ids("account=acc-1&account=acc-2&limit=2") == ["alert-3", "alert-2"]
        assert ids("since=2026-01-01T00:00:02Z") == ["alert-3", "alert-2"]


def test_an_alerts_detail_has_its_reasons_in_words_the_shadow_score_and_the_accounts_recent_alerts(
    tmp_path: Path,
) -> None:
    with serving(console_settings(tmp_path)) as console:
        console.feed.put(alert(1, "acc-1"), alert(2, "acc-2"), alert(3, "acc-1", rules=("card_testing",), challenger=0.42))
        console.wait_kept(3)
        client = console.client()
        client.login("vic")
        detail = client.get("/api/alerts/alert-3").body
        assert detail["alert"]["challenger_score"] == 0.42
        assert detail["reasons_in_words"] == [
            "rule card_testing (block): count_10m >= 3 and mean_10m < 3",
            "amount_ratio = 4.5: amount / amount_mean; 1 when no history; far above typical (+3.4 sd)",
        ]
        assert [r["alert_id"] for r in detail["account_recent"]] == ["alert-1"]
        assert detail["features"] == [{"name": "amount_ratio", "value": 4.5, "contribution": 3.4}]


def test_an_analysts_verdict_becomes_a_label_keyed_by_account_and_an_audit_line(tmp_path: Path) -> None:
    settings = console_settings(tmp_path)
    with serving(settings) as console:
        console.feed.put(alert(7, "acc-9"))
        console.wait_kept(1)
        client = console.client()
        client.login("ana")
        given = client.post("/api/alerts/alert-7/verdict", {"verdict": "fraud"})
        assert given.status == 200, given.body
        assert given.body["verdict"] == "fraud" and given.body["analyst"] == "ana"
        key, value, headers = console.sink.sent[0]
        label = decode_label(value)
        assert key == b"acc-9"
        assert (label.transaction_id, label.account_id, label.label) == ("tx-7", "acc-9", "fraud")
        assert label.label_time == int(console.clock.now * 1000)
        assert dict(headers) == {SOURCE_HEADER: b"console", ANALYST_HEADER: b"ana", ALERT_HEADER: b"alert-7",
                                 GIVEN_HEADER: str(label.label_time).encode()}  # fmt: skip
        assert client.get("/api/alerts").body["alerts"][0]["verdict"]["verdict"] == "fraud"

        again = client.post("/api/alerts/alert-7/verdict", {"verdict": "genuine"})
        assert again.status == 409
        assert again.error == "alert alert-7 was already judged fraud by ana; send replace: true to replace that verdict"
        assert len(console.sink.sent) == 1
        replaced = client.post("/api/alerts/alert-7/verdict", {"verdict": "genuine", "replace": True})
        assert replaced.status == 200 and replaced.body["replaced"] == "fraud"
        assert decode_label(console.sink.sent[1][1]).label == "genuine"
    lines = [json.loads(line) for line in Path(settings.console.audit_path).read_text().splitlines()]
    assert [(r["alert_id"], r["verdict"], r["analyst"], r["replaced"]) for r in lines] == [
        ("alert-7", "fraud", "ana", None), ("alert-7", "genuine", "ana", "fraud")]
    with serving(settings) as console:  # a restarted console still knows the alert was judged
        console.feed.put(alert(7, "acc-9"))
        console.wait_kept(1)
        client = console.client()
        client.login("ana")
        assert client.post("/api/alerts/alert-7/verdict", {"verdict": "fraud"}).status == 409


def test_every_write_is_checked_against_the_role_and_the_csrf_token(tmp_path: Path) -> None:
    with serving(console_settings(tmp_path)) as console:
        console.feed.put(alert(1))
        console.wait_kept(1)
        viewer, analyst = console.client(), console.client()
        viewer.login("vic")
        analyst.login("ana")
        refused = viewer.post("/api/alerts/alert-1/verdict", {"verdict": "fraud"})
        assert refused.status == 403 and refused.error == "user 'vic' is a viewer: only an analyst gives verdicts"
        no_token = analyst.post("/api/alerts/alert-1/verdict", {"verdict": "fraud"}, csrf=False)
        wrong_token = analyst.post("/api/alerts/alert-1/verdict", {"verdict": "fraud"}, csrf=False,
                                   headers={"X-CSRF-Token": viewer.csrf or ""})  # fmt: skip
        assert no_token.status == wrong_token.status == 403 and "X-CSRF-Token" in no_token.error
        form = analyst.post("/api/alerts/alert-1/verdict", raw=b"verdict=fraud",
                            headers={"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
        assert form.status == 415  # what a cross-site form can send is refused
        assert console.sink.sent == []


def test_a_label_kafka_refuses_is_a_503_and_nothing_is_recorded(tmp_path: Path) -> None:
    settings = console_settings(tmp_path)
    with serving(settings, sink=ListSink(failing=True)) as console:
        console.feed.put(alert(1))
        console.wait_kept(1)
        client = console.client()
        client.login("ana")
        answer = client.post("/api/alerts/alert-1/verdict", {"verdict": "fraud"})
        assert answer.status == 503 and "the verdict was not recorded" in answer.error
        assert client.get("/api/alerts/alert-1").body["alert"]["verdict"] is None
    assert not Path(settings.console.audit_path).exists() or Path(settings.console.audit_path).read_text() == ""


def test_an_audit_log_that_cannot_be_written_is_said_and_the_alert_still_counts_as_judged(tmp_path: Path) -> None:
    settings = console_settings(tmp_path)
    with serving(settings) as console:
        console.feed.put(alert(1))
        console.wait_kept(1)
        Path(settings.console.audit_path).mkdir()  # no longer a file the console can append to
        client = console.client()
        client.login("ana")
        answer = client.post("/api/alerts/alert-1/verdict", {"verdict": "fraud"})
        assert answer.status == 500 and "the label was written but the audit log" in answer.error
        assert "fix console.audit_path" in answer.error and "Traceback" not in answer.error
        assert len(console.sink.sent) == 1
        assert client.post("/api/alerts/alert-1/verdict", {"verdict": "fraud"}).status == 409


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "message"),
    [
        ("GET", "/api/alerts?min_score=2", None, 400, "min_score: expected a number between 0 and 1, got '2'"),
        ("GET", "/api/alerts?decision=deny", None, 400, "decision: expected review or block, got 'deny'"),
        ("GET", "/api/alerts?since=yesterday", None, 400, "since: expected an RFC 3339 time"),
        ("GET", "/api/alerts?limit=0", None, 400, "limit: expected a whole number of at least 1, got '0'"),
        ("GET", "/api/alerts?limit=99999", None, 400, "limit: at most 5,000, got 99,999"),
        ("GET", "/api/alerts?rule=", None, 400, "rule: expected the name of a decision rule"),
        ("GET", "/api/alerts?score=1", None, 400, "unknown query parameter 'score' (allowed: account, decision"),
        ("GET", "/api/alerts?decision=block&decision=review", None, 400, "decision: give it once"),
        ("GET", "/api/events?limit=3", None, 400, "unknown query parameter 'limit'"),
        ("GET", "/api/alerts/nope", None, 404, "alert 'nope' is not in the console's queue"),
        ("GET", "/api/alerts/" + "x" * 200, None, 400, "alert_id: expected 1 to 128 characters"),
        ("POST", "/api/alerts/alert-1/verdict", {"verdict": "maybe"}, 400, "verdict: expected fraud or genuine, got 'maybe'"),
        ("POST", "/api/alerts/alert-1/verdict", {"verdict": "fraud", "replace": "yes"}, 400, "bad request body: Expected `bool`, got `str` - at `$.replace`"),
        ("POST", "/api/alerts/alert-1/verdict", {"verdict": "fraud", "who": "me"}, 400, "bad request body: Object contains unknown field `who`"),
        ("POST", "/api/alerts/alert-1/verdict", {}, 400, "bad request body: Object missing required field `verdict`"),
        ("POST", "/api/alerts/alert-1/verdict", ["fraud"], 400, "bad request body: Expected `object`, got `array`"),
        ("POST", "/api/alerts/nope/verdict", {"verdict": "fraud"}, 404, "alert 'nope' is not in the console's queue"),
        ("POST", "/api/alerts/alert-1/verdict", {"verdict": "x" * 20_000}, 413, "the body is larger than 16,384 bytes"),
        ("GET", "/api/nothing", None, 404, "no such page or endpoint: /api/nothing"),
        ("DELETE", "/api/alerts", None, 405, "DELETE is not allowed on /api/alerts"),
        ("GET", "/api/alerts/alert-1/verdict", None, 405, "GET is not allowed on /api/alerts/alert-1/verdict"),
    ],
)
def test_bad_input_gets_a_4xx_with_a_clear_message_never_a_traceback(
    tmp_path: Path, method: str, path: str, body: object, status: int, message: str
) -> None:
    with serving(console_settings(tmp_path)) as console:
        console.feed.put(alert(1))
        console.wait_kept(1)
        client = console.client()
        client.login("ana")
        answer = client.request(method, path, body)
        assert answer.status == status, answer.body
        assert answer.error.startswith(message), answer.error
        assert "Traceback" not in answer.error


def test_not_json_is_refused_with_a_message(tmp_path: Path) -> None:
    with serving(console_settings(tmp_path)) as console:
        console.feed.put(alert(1))
        console.wait_kept(1)
        client = console.client()
        client.login("ana")
        answer = client.post("/api/alerts/alert-1/verdict", raw=b"{not json", headers={"Content-Type": "application/json"})
        assert answer.status == 400 and answer.error.startswith("the body is not valid JSON")
        login = client.post("/api/login", raw=b"\xff\xfe", headers={"Content-Type": "application/json"})
        assert login.status == 400


def test_without_users_the_console_is_a_local_analysts_and_answers_only_to_loopback_names(tmp_path: Path) -> None:
    with serving(console_settings(tmp_path, users=False)) as console:
        console.feed.put(alert(1))
        console.wait_kept(1)
        client = console.client()
        session = client.get("/api/session")
        assert session.status == 200 and (session.body["user"], session.body["role"], session.body["open"]) == (
            "local", "analyst", True)
        client.csrf = session.body["csrf"]
        assert client.post("/api/alerts/alert-1/verdict", {"verdict": "genuine"}).status == 200
        assert client.post("/api/login", {"username": "x", "password": "y"}).status == 400
        rebound = client.get("/api/session", headers={"Host": "attacker.example:8765"})
        assert rebound.status == 421 and "answers only to localhost" in rebound.error
        for host in ("localhost:8765", "LOCALHOST", "127.0.0.1", "127.0.0.1:80", "[::1]:8765"):
            assert client.get("/api/alerts", headers={"Host": host}).status == 200, host
        for host in ("127.0.0.1.attacker.example", "attacker.example", "10.0.0.1:8765", "[::1]x"):
            assert client.get("/api/alerts", headers={"Host": host}).status == 421, host


def test_the_event_stream_sends_the_status_then_new_alerts_its_filter_lets_through_and_verdicts(
    tmp_path: Path,
) -> None:
    with serving(console_settings(tmp_path)) as console:
        client = console.client()
        client.login("ana")
        with client.events("/api/events?decision=block") as events:
            assert events.status == 200 and events.content_type.startswith("text/event-stream")
            name, status = events.next()
            assert name == "status" and status["state"] == "absent" and "fraudstream run" in status["message"]
            console.feed.put(alert(1, decision="review"), alert(2, decision="block", score=0.9998))
            name, data = _next_not_status(events)
            assert (name, data["alert_id"]) == ("alert", "alert-2")
            assert client.post("/api/alerts/alert-2/verdict", {"verdict": "fraud"}).status == 200
            name, data = _next_not_status(events)
            assert (name, data["alert_id"], data["verdict"]["verdict"]) == ("verdict", "alert-2", "fraud")


def test_the_event_stream_ends_with_expired_when_the_session_does(tmp_path: Path) -> None:
    with serving(console_settings(tmp_path, session_ttl_s=60.0)) as console:
        client = console.client()
        client.login("vic")
        with client.events() as events:
            assert events.next()[0] == "status"
            console.clock.now += 61
            console.feed.put(alert(1))
            name, data = events.next()
            assert (name, data) == ("expired", {"error": "the session expired: sign in again"})
            with pytest.raises(EOFError):
                events.next()


def test_the_status_carries_the_registry_versions_beside_the_served_ones_when_the_console_watches_it(
    tmp_path: Path, registry_store: MlflowSettings
) -> None:
    settings = msgspec.structs.replace(console_settings(tmp_path), mlflow=registry_store)  # fraud-classifier@champion
    serving_status = ServingStatus(uri="models:/fraud-classifier@champion", champion="fraud-classifier/1", swaps=0)
    actor = msgspec.structs.replace(actor_status("scoring-0-0", {"0": partition_status(10, 4, 10)}), serving=serving_status)
    write_status(tmp_path / "status.json", job_status([actor], plan=[[0]], stage_plan=[[0]], events=[], now=1.0))
    with serving(settings, registry=RegistryWatch(settings)) as console:
        client = console.client()
        client.login("vic")
        body = client.get("/api/status").body
        # the served versions where they were; the registry's beside them (its champion moved on: 2)
        assert (body["state"], body["events_per_s"], body["champion"], body["challenger"]) == (
            "running", 10.0, "fraud-classifier/1", None)
        expected = {"model": "fraud-classifier", "champion": "fraud-classifier/2", "challenger": "fraud-classifier/3",
                    "message": None}  # fmt: skip
        assert body["registry"] == expected
        with client.events() as events:
            name, status = events.next()
            assert name == "status" and status["registry"] == expected and status["champion"] == "fraud-classifier/1"
    with serving(settings) as console:  # no watch: no registry versions
        client = console.client()
        client.login("vic")
        body = client.get("/api/status").body
        assert body["registry"] is None and body["champion"] == "fraud-classifier/1"


def _next_not_status(events: object) -> tuple[str, dict[str, object]]:
    while True:
        name, data = events.next()  # type: ignore[attr-defined]
        if name != "status":
            return name, data
