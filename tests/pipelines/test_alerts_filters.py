"""The pure parts of `fraudstream alerts tail`: option parsing, filters, record handling."""

from __future__ import annotations

import pytest

from configs import ConfigError
from contracts import Alert, Reasons, encode
from contracts.errors import RecordError
from pipelines.alerts import (
    AlertFilter,
    TailStats,
    _summary,
    alert_line,
    check_bootstrap,
    make_filter,
    parse_decision,
    parse_limit,
    parse_min_score,
    parse_since,
    read_alert,
)

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
HOUR = 3_600_000


def alert(n: int, account: str, *, hours: int = 0, score: float = 0.996, decision: str = "review",
          rules: tuple[str, ...] = ()) -> Alert:  # fmt: skip
    return Alert(
        alert_id=f"alert-{n}",
        transaction_id=f"tx-{n}",
        account_id=account,
        event_time=T0 + hours * HOUR,
        score=score,
        decision=decision,
        reasons=Reasons(rules=list(rules)),
        model_versions={"anomaly": "hst"},
        feature_version="fs1",
        ingest_time=T0,
        alert_time=T0,
    )  # type: ignore[arg-type]


ALERTS = [
    alert(0, "acc-1", hours=0, score=0.996, decision="review"),
    alert(1, "acc-2", hours=1, score=0.9996, decision="block", rules=("card_testing",)),
    alert(2, "acc-1", hours=24, score=0.97, decision="review", rules=("account_takeover",)),
    alert(3, "acc-3", hours=36, score=0.99, decision="block", rules=("card_testing",)),
    alert(4, "acc-2", hours=48, score=0.998, decision="review"),
    alert(5, "acc-4", hours=48, score=0.97, decision="review", rules=("bust_out", "account_takeover")),
    alert(6, "acc-1", hours=72, score=0.9999, decision="block"),
]


def kept(alert_filter: AlertFilter) -> list[int]:
    return [n for n, a in enumerate(ALERTS) if alert_filter.matches(a)]


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, [0, 1, 2, 3, 4, 5, 6]),
        ({"accounts": ["acc-1"]}, [0, 2, 6]),
        ({"accounts": ["acc-1", "acc-4"]}, [0, 2, 5, 6]),  # several accounts: any of them
        ({"accounts": ["acc-9"]}, []),
        ({"decision": "block"}, [1, 3, 6]),
        ({"decision": "REVIEW"}, [0, 2, 4, 5]),
        ({"min_score": "0.998"}, [1, 4, 6]),  # at or above: 0.998 itself is kept
        ({"min_score": 0.0}, [0, 1, 2, 3, 4, 5, 6]),
        ({"rule": "card_testing"}, [1, 3]),
        ({"rule": "account_takeover"}, [2, 5]),  # one of several fired rules is enough
        ({"rule": "card"}, []),  # whole rule names, not substrings
        ({"since": "2026-01-02T00:00:00Z"}, [2, 3, 4, 5, 6]),  # at or after: the alert at 2026-01-02T00:00 is kept
        ({"since": "2026-01-02T01:00:00+01:00"}, [2, 3, 4, 5, 6]),  # the same instant with an offset
        ({"since": "2026-01-02T00:00:00.001Z"}, [3, 4, 5, 6]),
        ({"since": "2026-01-03"}, [4, 5, 6]),  # a date is UTC midnight
        # every criterion must hold
        ({"accounts": ["acc-1", "acc-2"], "decision": "block"}, [1, 6]),
        ({"min_score": "0.998", "since": "2026-01-02T00:00:00Z"}, [4, 6]),
        ({"decision": "block", "rule": "card_testing", "since": "2026-01-01T12:00:00Z"}, [3]),
    ],
)
def test_filters_keep_exactly_the_matching_alerts(options: dict, expected: list[int]) -> None:
    assert kept(make_filter(**options)) == expected


def test_an_empty_filter_sets_nothing() -> None:
    assert make_filter() == AlertFilter()
    assert make_filter(accounts=["a", "a", "b"]).accounts == frozenset({"a", "b"})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-01-01T00:00:00Z", T0),
        ("2026-01-01T00:00:00z", T0),
        ("2026-01-01T00:00:00.250Z", T0 + 250),
        ("2026-01-01T02:00:00+02:00", T0),
        ("2025-12-31T19:00:00-05:00", T0),
        ("2026-01-01 00:00:00Z", T0),  # RFC 3339 allows a space for the T
        ("2026-01-01", T0),
        ("2026-01-01T01:00:00", T0 + HOUR),  # no offset: UTC
        (" 2026-01-01T00:00:00Z ", T0),
        (None, None),
    ],
)
def test_since_parses_rfc3339_to_epoch_ms(value: str | None, expected: int | None) -> None:
    assert parse_since(value) == expected


@pytest.mark.parametrize(
    "value", ["yesterday", "", "  ", "01/02/2026", "2026-13-01", "2026-01-01T25:00:00Z", "2026-01-01T00:00:00+25:00",
              "1767225600000", "now", "2026-01-01T00:00:00 UTC"],
)  # fmt: skip
def test_bad_since_names_the_option_and_what_is_allowed(value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        make_filter(since=value)
    message = str(caught.value)
    assert message.startswith("--since: expected an RFC 3339 time such as 2026-01-15T12:00:00Z")
    assert message.endswith(f"got {value!r}")
    assert "\n" not in message


@pytest.mark.parametrize("value", ["deny", "", "reviews", "approve"])
def test_bad_decision_lists_the_allowed_ones(value: str) -> None:
    with pytest.raises(ConfigError, match=r"^--decision: expected review or block, got "):
        parse_decision(value)


@pytest.mark.parametrize("value", ["1.5", "-0.1", "abc", "", "nan", "inf", 2])
def test_min_score_outside_zero_one_is_refused(value: object) -> None:
    with pytest.raises(ConfigError, match=r"^--min-score: expected a number between 0 and 1, got "):
        parse_min_score(value)  # type: ignore[arg-type]


def test_min_score_bounds_are_allowed() -> None:
    assert (parse_min_score("0"), parse_min_score("1"), parse_min_score(None)) == (0.0, 1.0, None)


@pytest.mark.parametrize("value", ["0", "-3", "two", "1.5", ""])
def test_limit_must_be_a_positive_whole_number(value: str) -> None:
    with pytest.raises(ConfigError, match=r"^--limit: expected a whole number of at least 1, got "):
        parse_limit(value)
    assert parse_limit("25") == 25 and parse_limit(None) is None


def test_empty_account_and_rule_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"^--account: expected an account id"):
        make_filter(accounts=["acc-1", ""])
    with pytest.raises(ConfigError, match=r"^--rule: expected the name of a decision rule"):
        make_filter(rule=" ")


@pytest.mark.parametrize("value", ["localhost", "127.0.0.1:", ":9092", "a:1,b", "host:port", "a b:1"])
def test_bootstrap_must_be_host_port(value: str) -> None:
    with pytest.raises(ConfigError, match=r"^--bootstrap: expected HOST:PORT"):
        check_bootstrap(value)
    assert check_bootstrap("kafka-1:9092, kafka-2:9092") == "kafka-1:9092, kafka-2:9092"


def test_read_alert_decodes_alerts_and_explains_the_rest() -> None:
    raw = encode(ALERTS[1])
    assert read_alert(raw) == ALERTS[1]
    for value, problem in [
        (None, "no value (a tombstone)"),
        (b"not json", "not valid JSON"),
        (b'{"alert_id": "x"}', "alert.transaction_id: required field is missing"),
        (raw.replace(b'"decision":"block"', b'"decision":"deny"'), "alert.decision"),
        (b"\xff\xfe{}", "not valid JSON"),
        (raw.replace(b"acc-2", b"acc-\xff"), "not UTF-8"),
    ]:
        with pytest.raises(RecordError) as caught:
            read_alert(value)
        assert problem in str(caught.value), (value, str(caught.value))


def test_alert_line_is_the_value_as_on_the_topic_on_one_line() -> None:
    raw = encode(ALERTS[3])
    assert alert_line(raw) == raw.decode()
    assert alert_line(raw + b"\n") == raw.decode()
    pretty = b'{\n  "alert_id": "a b",\n  "score": 0.5\n}'
    assert alert_line(pretty) == '{"alert_id":"a b","score":0.5}'  # whitespace inside strings is kept


def test_summary_says_why_the_tail_ended() -> None:
    stats = TailStats(printed=1, filtered=4, not_alerts=2, reached_end=True)
    assert _summary(stats, follow=False, from_beginning=True) == (
        "end of every partition: 1 alert printed; 4 left out by the filters; 2 records skipped as not an alert"
    )
    assert _summary(TailStats(printed=3, limit_reached=True), True, True) == "--limit reached: 3 alerts printed"
    assert "--from-beginning reads the alerts already there" in _summary(TailStats(reached_end=True), False, False)
    assert _summary(TailStats(), True, False) == "stopped: 0 alerts printed"
