"""--from / --until: a date alone is from its midnight, until the end of that whole day; a time is exact."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from configs import ConfigError, HistorySettings
from connectors.history import History, Span, iso_ms, parse_span, parse_time, read_history

MIDNIGHT_14 = 1534204800000  # 2018-08-14T00:00:00Z
MIDNIGHT_15 = MIDNIGHT_14 + 86_400_000


def test_a_date_alone_until_is_the_whole_day() -> None:
    span = parse_span(None, "2018-08-14")
    assert span.until_ms == MIDNIGHT_15 - 1 and span.whole_day
    assert iso_ms(span.until_ms) == "2018-08-14T23:59:59.999Z"


@pytest.mark.parametrize(
    ("until", "expected"),
    [
        ("2018-08-14T00:00:00Z", MIDNIGHT_14),
        ("2018-08-14T00:00", MIDNIGHT_14),
        ("2018-08-14T12:30:00+02:00", MIDNIGHT_14 + 10 * 3_600_000 + 30 * 60_000),
        ("2018-08-14T23:59:59.500Z", MIDNIGHT_15 - 500),
    ],
)
def test_a_time_until_is_exact(until: str, expected: int) -> None:
    span = parse_span(None, until)
    assert span.until_ms == expected and not span.whole_day


def test_a_date_alone_from_is_its_midnight() -> None:
    assert parse_span("2018-08-14", None) == Span(MIDNIGHT_14, None, False)
    assert parse_time("2018-08-14", "--from") == MIDNIGHT_14  # the default, as `alerts tail --since` reads it


def test_the_same_date_as_from_and_until_is_one_whole_day() -> None:
    span = parse_span("2018-08-14", "2018-08-14")
    assert (span.from_ms, span.until_ms) == (MIDNIGHT_14, MIDNIGHT_15 - 1)
    with pytest.raises(ConfigError, match="--from 2018-08-15 is after --until 2018-08-14; swap them"):
        parse_span("2018-08-15", "2018-08-14")
    with pytest.raises(ConfigError, match="--until: expected an ISO 8601 date or time"):
        parse_span(None, "tomorrow")


def test_reading_until_a_date_keeps_its_last_millisecond_and_drops_the_next_midnight(tmp_path: Path) -> None:
    times = [MIDNIGHT_14 - 1, MIDNIGHT_14, MIDNIGHT_14 + 43_200_000, MIDNIGHT_15 - 1, MIDNIGHT_15]
    table = pa.table({
        "transaction_id": [f"t{i}" for i in range(len(times))],
        "account_id": ["a"] * len(times),
        "event_time": pa.array(times, pa.timestamp("ms", tz="UTC")),
        "amount": [1.0] * len(times),
    })  # fmt: skip
    pq.write_table(table, tmp_path / "tx.parquet")
    span = parse_span(None, "2018-08-14")
    history = read_history(tmp_path / "tx.parquet", HistorySettings(), until_ms=span.until_ms)
    assert history.transactions.column("transaction_id").to_pylist() == ["t0", "t1", "t2", "t3"]
    noon = parse_span(None, "2018-08-14T12:00Z").until_ms
    exact = read_history(tmp_path / "tx.parquet", HistorySettings(), until_ms=noon)
    assert exact.transactions.column("transaction_id").to_pylist() == ["t0", "t1", "t2"]
    assert span.describe(history) == (
        "history: 2018-08-13T23:59:59.999Z .. 2018-08-14T23:59:59.999Z (from: first row, until: whole day)"
    )


def test_the_bounds_printed_name_open_ends_by_the_rows_read() -> None:
    rows = pa.table({"event_time": pa.array([MIDNIGHT_14 + 1_000, MIDNIGHT_15 - 1_000], pa.timestamp("ms", tz="UTC"))})
    history = History(rows, None, "h")
    assert Span().describe(history) == "history: 2018-08-14T00:00:01Z .. 2018-08-14T23:59:59Z (whole history)"
    assert parse_span("2018-08-14T06:00:00Z", None).describe(history) == (
        "history: 2018-08-14T06:00:00Z .. 2018-08-14T23:59:59Z (until: last row)"
    )
    assert parse_span(None, "2018-08-14T18:00:00Z").describe(history) == (
        "history: 2018-08-14T00:00:01Z .. 2018-08-14T18:00:00Z (from: first row)"
    )
