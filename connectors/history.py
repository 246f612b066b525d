"""Read a Parquet history through the ``history.columns`` mapping into our columns and types.

A history is one Parquet file or a directory of them (``fraudstream generate``
writes ``transactions.parquet`` beside ``labels.parquet``; any other directory
is read as one dataset, hive partitions included, files named ``labels*`` left
out). Labels come from ``--labels FILE``, else a ``label`` column of the
transactions (released ``history.label_delay_days`` after each transaction,
unless a ``label_time`` column says when), else a ``labels.parquet`` beside
the transactions.

What comes out has our names and types (``contracts.arrow``): ids as strings,
times as ``timestamp[ms, UTC]``, amounts and coordinates as float64, so
:func:`features.offline.build_feature_table` reads it as the actors read the
topic. Optional fields the history lacks are simply absent: the features that
need them stay neutral. Anything that cannot be read stops with one line
naming the field and the fix (:class:`HistoryError`).

``--from`` / ``--until`` (:func:`parse_span`) bound the span in event time, both
inclusive: a date alone is ``--from`` its UTC midnight, ``--until`` the end of
that whole day; a time is exact. :meth:`Span.describe` is the line the commands
print with the bounds they used.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from configs import ConfigError, HistorySettings
from contracts.arrow import LABEL_SCHEMA, TIME, TRANSACTION_SCHEMA

REQUIRED = ("transaction_id", "account_id", "event_time", "amount")
_IDS = ("transaction_id", "account_id", "merchant_id", "terminal_id", "device_id")
_TEXT = ("currency", "merchant_category", "country", "channel", "fraud_scenario")
_NUMBERS = ("amount", "lat", "lon")
_TIMES = ("event_time", "label_time")
_TRUTH = ("is_fraud", "fraud_scenario")
_EPOCH_MS = {"s": 1000.0, "ms": 1.0, "us": 1e-3, "ns": 1e-6}
DAY_MS = 86_400_000
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class HistoryError(ConfigError):
    """A history that cannot be read as configured; the message names the field and the fix (one line)."""


@dataclass(frozen=True)
class History:
    """A history in our columns: transactions (with ground truth when present) and labels."""

    #: Transaction columns of ``TRANSACTION_SCHEMA`` that the history has, plus ``is_fraud`` / ``fraud_scenario``.
    transactions: pa.Table
    #: ``LABEL_SCHEMA`` rows, or None when the history has no labels.
    labels: pa.Table | None
    #: Where the transactions were read from (for messages and reports).
    source: str
    #: Rows left out because a required field was empty.
    dropped_rows: int = 0
    #: Where the labels came from: a file path, "label column", or "" (none).
    labels_source: str = ""


def parse_time(value: str | None, option: str, *, end_of_day: bool = False) -> int | None:
    """An ISO 8601 date or time (UTC when no offset is given) as epoch ms; None stays None.

    A date alone is its UTC midnight, or with ``end_of_day`` its last millisecond
    (23:59:59.999, so an inclusive bound takes the whole day); a time is exact.

    >>> parse_time("2026-01-15", "--from"), parse_time("2026-01-15T12:00:00+01:00", "--until")
    (1768435200000, 1768474800000)
    >>> parse_time("2026-01-15", "--until", end_of_day=True) - parse_time("2026-01-16", "--from")
    -1
    >>> parse_time("yesterday", "--from")
    Traceback (most recent call last):
    ...
    configs.settings.ConfigError: --from: expected an ISO 8601 date or time such as 2026-01-15 or 2026-01-15T12:00:00Z, got 'yesterday'
    """
    if value is None:
        return None
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"{option}: expected an ISO 8601 date or time such as 2026-01-15 or 2026-01-15T12:00:00Z, got {value!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    millis = int(moment.timestamp() * 1000)
    return millis + DAY_MS - 1 if end_of_day and _date_only(value) else millis


def _date_only(value: str) -> bool:
    try:
        dt.date.fromisoformat(value)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class Span:
    """The event-time bounds a command reads, both inclusive (epoch ms; None: open)."""

    from_ms: int | None = None
    until_ms: int | None = None
    #: ``--until`` was a date alone, so ``until_ms`` is that day's last millisecond.
    whole_day: bool = False

    def describe(self, history: History) -> str:
        """The bounds used, open ends shown as the first / last row read.

        >>> span = parse_span("2018-04-01", "2018-08-14")
        >>> table = pa.table({"event_time": pa.array([1522540800000, 1534291199000], TIME)})
        >>> span.describe(History(table, None, "h"))
        'history: 2018-04-01T00:00:00Z .. 2018-08-14T23:59:59.999Z (until: whole day)'
        >>> Span().describe(History(table, None, "h"))
        'history: 2018-04-01T00:00:00Z .. 2018-08-14T23:59:59Z (whole history)'
        """
        times = history.transactions.column("event_time").cast(pa.int64())
        first, last = (pc.min(times).as_py(), pc.max(times).as_py()) if len(times) else (None, None)
        start = self.from_ms if self.from_ms is not None else first
        end = self.until_ms if self.until_ms is not None else last
        notes = ["from: first row"] if self.from_ms is None else []
        if self.until_ms is None:
            notes.append("until: last row")
        elif self.whole_day:
            notes.append("until: whole day")
        note = "whole history" if self.from_ms is None and self.until_ms is None else ", ".join(notes)
        text = f"history: {iso_ms(start)} .. {iso_ms(end)}"
        return f"{text} ({note})" if note else text


def parse_span(from_: str | None, until: str | None) -> Span:
    """``--from`` / ``--until`` as a :class:`Span`: a date alone is from its midnight, until its end (whole day).

    >>> parse_span("2026-01-15", "2026-01-15")
    Span(from_ms=1768435200000, until_ms=1768521599999, whole_day=True)
    >>> parse_span(None, "2026-01-15T12:00:00Z")
    Span(from_ms=None, until_ms=1768478400000, whole_day=False)
    >>> parse_span("2026-01-16", "2026-01-15")
    Traceback (most recent call last):
    ...
    configs.settings.ConfigError: --from 2026-01-16 is after --until 2026-01-15; swap them
    """
    from_ms = parse_time(from_, "--from")
    until_ms = parse_time(until, "--until", end_of_day=True)
    if from_ms is not None and until_ms is not None and from_ms > until_ms:
        raise ConfigError(f"--from {from_} is after --until {until}; swap them")
    return Span(from_ms, until_ms, until is not None and _date_only(until))


def iso_ms(ms: int | None) -> str:
    """Epoch milliseconds as ISO 8601 UTC (``Z``), milliseconds shown when not zero; None as ``?``.

    >>> iso_ms(1767225600000), iso_ms(1767311999999)
    ('2026-01-01T00:00:00Z', '2026-01-01T23:59:59.999Z')
    """
    if ms is None:
        return "?"
    moment = _EPOCH + dt.timedelta(milliseconds=ms)  # exact, unlike a float of seconds
    return moment.isoformat(timespec="milliseconds" if ms % 1000 else "seconds").replace("+00:00", "Z")


def read_history(
    path: str | Path,
    settings: HistorySettings,
    labels_path: str | Path | None = None,
    until_ms: int | None = None,
) -> History:
    """The history at ``path`` (file or directory) with its labels, in our columns; rows after ``until_ms`` dropped."""
    path = Path(path)
    if not path.exists():
        raise HistoryError(
            f"--history: {path} does not exist; pass a Parquet file or a directory of them "
            "(`fraudstream generate --out DIR` writes one)"
        )
    dataset = _dataset(path, "--history")
    transactions = _transactions(dataset, settings, str(path))
    dropped = 0
    mask = None
    for name in REQUIRED:
        valid = pc.is_valid(transactions.column(name))
        mask = valid if mask is None else pc.and_(mask, valid)
    if mask is not None and not pc.all(mask).as_py():
        before = transactions.num_rows
        transactions = transactions.filter(mask)
        dropped = before - transactions.num_rows
    if until_ms is not None:
        times = transactions.column("event_time").cast(pa.int64())
        transactions = transactions.filter(pc.less_equal(times, until_ms))
    labels, labels_source = _labels(path, labels_path, transactions, settings)
    if "label" in transactions.column_names:
        transactions = transactions.drop_columns([c for c in ("label", "label_time") if c in transactions.column_names])
    if transactions.num_rows == 0:
        raise HistoryError(f"--history: {path} has no transactions{' up to --until' if until_ms is not None else ''}")
    return History(transactions, labels, str(path), dropped, labels_source)


def _dataset(path: Path, option: str) -> ds.Dataset:
    try:
        if path.is_dir():
            dataset = ds.dataset(path, format="parquet", partitioning="hive", ignore_prefixes=[".", "_", "labels"])
        else:
            dataset = ds.dataset(path, format="parquet")
    except (pa.ArrowInvalid, OSError) as exc:
        raise HistoryError(f"{option}: {path} is not readable as Parquet ({_first_line(exc)})") from None
    if path.is_dir() and not dataset.files:
        raise HistoryError(f"{option}: no Parquet files in {path}; pass a file or a directory of .parquet files")
    return dataset


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _source_columns(
    schema: pa.Schema, settings: HistorySettings, fields: tuple[str, ...], where: str, elsewhere: tuple[str, ...] = ()
) -> dict[str, str]:
    """Our field -> the column holding it, for the fields present.

    A mapped column the file lacks is an error, except for the ``elsewhere``
    fields, which may live in the other file (labels beside transactions).
    """
    found: dict[str, str] = {}
    for name in fields:
        column = settings.columns.get(name)
        if column is not None:
            if column not in schema.names and name in elsewhere:
                continue
            if column not in schema.names:
                raise HistoryError(
                    f"history.columns.{name}: column {column!r} is not in {where} "
                    f"(columns: {', '.join(schema.names)}); fix the mapping"
                )
            found[name] = column
        elif name in schema.names and name not in settings.columns.values():
            found[name] = name
    return found


def _transactions(dataset: ds.Dataset, settings: HistorySettings, where: str) -> pa.Table:
    fields = tuple(TRANSACTION_SCHEMA.names) + _TRUTH + ("label", "label_time")
    found = _source_columns(dataset.schema, settings, fields, where, elsewhere=("label", "label_time"))
    for name in REQUIRED:
        if name not in found:
            raise HistoryError(
                f"history.columns.{name}: {where} has no column {name!r}; map yours in the config, "
                f"e.g. history: {{columns: {{{name}: your_column}}}}"
            )
    if ("lat" in found) != ("lon" in found):
        missing = "lon" if "lat" in found else "lat"
        raise HistoryError(f"history.columns.{missing}: lat and lon go together; map both or neither")
    try:
        raw = dataset.to_table(columns=sorted(set(found.values())))
    except (pa.ArrowInvalid, OSError) as exc:
        raise HistoryError(f"--history: {where} could not be read ({_first_line(exc)})") from None
    columns = {name: _convert(name, raw.column(source), settings, source) for name, source in found.items()}
    return pa.table(columns)


def _labels(
    path: Path, labels_path: str | Path | None, transactions: pa.Table, settings: HistorySettings
) -> tuple[pa.Table | None, str]:
    if labels_path is not None:
        file = Path(labels_path)
        if not file.exists():
            raise HistoryError(f"--labels: {file} does not exist; pass the labels Parquet file (or leave --labels out)")
        return _label_file(file, transactions, settings), str(file)
    if "label" in transactions.column_names:
        return _label_column(transactions, settings), "label column"
    beside = (path if path.is_dir() else path.parent) / "labels.parquet"
    if beside.is_file() and beside != path:
        return _label_file(beside, transactions, settings), str(beside)
    if "label" in settings.columns:
        raise HistoryError(
            f"history.columns.label: column {settings.columns['label']!r} is not in {path} and there is no labels "
            "file; fix the mapping or pass --labels FILE"
        )
    return None, ""


def _label_file(file: Path, transactions: pa.Table, settings: HistorySettings) -> pa.Table:
    dataset = _dataset(file, "--labels")
    fields = ("transaction_id", "account_id", "label", "label_time")
    found = _source_columns(dataset.schema, settings, fields, str(file), elsewhere=("account_id",))
    for name in ("transaction_id", "label", "label_time"):
        if name not in found:
            raise HistoryError(
                f"history.columns.{name}: labels file {file} has no column {name!r}; map yours in the config"
            )
    raw = dataset.to_table(columns=sorted(set(found.values())))
    columns = {name: _convert(name, raw.column(source), settings, source) for name, source in found.items()}
    labels = pa.table(columns)
    if "account_id" not in labels.column_names:  # take it from the transaction
        labels = labels.join(transactions.select(["transaction_id", "account_id"]), "transaction_id", join_type="inner")
    labels = labels.filter(pc.and_(pc.is_valid(labels.column("label")), pc.is_valid(labels.column("label_time"))))
    return labels.select(LABEL_SCHEMA.names).cast(LABEL_SCHEMA).sort_by([("label_time", "ascending")])


def _label_column(transactions: pa.Table, settings: HistorySettings) -> pa.Table:
    has = transactions.filter(pc.is_valid(transactions.column("label")))
    if "label_time" in has.column_names:
        times = pc.coalesce(has.column("label_time"), _shift(has.column("event_time"), settings.label_delay_days))
    else:
        times = _shift(has.column("event_time"), settings.label_delay_days)
    labels = pa.table(
        {
            "transaction_id": has.column("transaction_id"),
            "account_id": has.column("account_id"),
            "label": has.column("label"),
            "label_time": times,
        }
    )
    return labels.cast(LABEL_SCHEMA).sort_by([("label_time", "ascending")])


def _shift(times: pa.ChunkedArray, days: float) -> pa.ChunkedArray:
    shifted = pc.add(times.cast(pa.int64()), int(days * DAY_MS))
    return shifted.cast(TIME)


def _convert(name: str, column: pa.ChunkedArray, settings: HistorySettings, source: str) -> pa.ChunkedArray:
    """One column in our type; HistoryError naming the field when its type cannot be one."""
    kind = column.type
    if pa.types.is_dictionary(kind):
        column = column.cast(kind.value_type)
        kind = kind.value_type
    try:
        if name in _TIMES:
            return _to_time(name, column, settings, source)
        if name in _IDS:
            if pa.types.is_integer(kind) or pa.types.is_string(kind) or pa.types.is_large_string(kind):
                return column.cast(pa.string())
            raise HistoryError(f"history.columns.{name}: column {source!r} has type {kind}; expected integers or strings")
        if name in _TEXT:
            return column.cast(pa.string())
        if name in _NUMBERS:
            if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind):
                return column.cast(pa.float64())
            raise HistoryError(f"history.columns.{name}: column {source!r} has type {kind}; expected numbers")
        if name == "is_fraud":
            return _to_flag(name, column, source).fill_null(False)
        if name == "label":
            flag = _to_flag(name, column, source)
            return pc.if_else(flag, "fraud", "genuine")
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise HistoryError(f"history.columns.{name}: column {source!r} could not be read ({_first_line(exc)})") from None
    raise AssertionError(name)


def _to_flag(name: str, column: pa.ChunkedArray, source: str) -> pa.ChunkedArray:
    kind = column.type
    if pa.types.is_boolean(kind):
        return column
    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        return pc.not_equal(column, 0)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        text = pc.utf8_lower(pc.utf8_trim_whitespace(column.cast(pa.string())))
        fraud = pc.is_in(text, pa.array(["fraud", "1", "true", "yes"]))
        genuine = pc.is_in(text, pa.array(["genuine", "0", "false", "no", "legit", "legitimate"]))
        unknown = pc.and_(pc.and_(pc.invert(fraud), pc.invert(genuine)), pc.is_valid(text))
        if pc.any(unknown).as_py():
            example = text.filter(unknown)[0].as_py()
            raise HistoryError(
                f"history.columns.{name}: column {source!r} holds {example!r}; expected fraud/genuine, true/false or 1/0"
            )
        return pc.if_else(pc.is_valid(text), fraud, pa.scalar(None, pa.bool_()))
    raise HistoryError(f"history.columns.{name}: column {source!r} has type {kind}; expected booleans, 1/0 or text")


def _to_time(name: str, column: pa.ChunkedArray, settings: HistorySettings, source: str) -> pa.ChunkedArray:
    kind = column.type
    if pa.types.is_timestamp(kind):
        return column.cast(TIME)  # a time without zone is taken as UTC
    if pa.types.is_date(kind):
        return column.cast(pa.timestamp("ms")).cast(TIME)
    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        factor = _EPOCH_MS[settings.epoch_unit]
        if pa.types.is_integer(kind) and factor >= 1.0:
            millis = pc.multiply(column.cast(pa.int64()), int(factor))
        else:
            millis = pc.round(pc.multiply(column.cast(pa.float64()), factor)).cast(pa.int64())
        return millis.cast(TIME)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        try:
            return column.cast(TIME)
        except pa.ArrowInvalid:
            return column.cast(pa.timestamp("ms")).cast(TIME)  # no offset: UTC
    raise HistoryError(
        f"history.columns.{name}: column {source!r} has type {kind}; expected timestamps, ISO 8601 text "
        f"or epoch numbers (unit history.epoch_unit = {settings.epoch_unit})"
    )
