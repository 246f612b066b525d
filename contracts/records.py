"""Typed event records: Transaction, Label, Alert and DeadLetter.

Records are frozen ``msgspec.Struct`` values decoded and validated at the edge
(one C-speed pass, no intermediate dict). Times are epoch milliseconds (UTC) once
decoded; on the wire ``event_time`` and ``label_time`` may also be RFC 3339 strings.

>>> tx = decode_transaction(b'{"transaction_id": "t1", "account_id": "a1",'
...                         b' "event_time": "2026-01-01T00:00:00Z", "amount": 12.5}')
>>> tx.event_time, tx.amount, tx.country
(1767225600000, 12.5, None)
>>> decode_transaction(b'{"transaction_id": "t1", "account_id": "a1",'
...                    b' "event_time": 1767225600000, "amount": "12"}')
Traceback (most recent call last):
...
contracts.errors.RecordError: transaction.amount: Expected `float`, got `str` (fix: send a JSON number between 0 and 1e9)
"""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeAlias

import msgspec

from contracts.errors import RecordError
from contracts.guards import DEFAULT_LIMITS, DecodeLimits, check_raw

#: Bumped when the alert record changes incompatibly.
ALERT_SCHEMA_VERSION = 1
DEAD_LETTER_SCHEMA_VERSION = 1

_MIN_TIME_MS = 946_684_800_000  # 2000-01-01T00:00:00Z
_MAX_TIME_MS = 4_102_444_800_000  # 2100-01-01T00:00:00Z

Id: TypeAlias = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
EpochMs: TypeAlias = Annotated[int, msgspec.Meta(ge=_MIN_TIME_MS, le=_MAX_TIME_MS)]
Rfc3339: TypeAlias = Annotated[dt.datetime, msgspec.Meta(tz=True)]
#: On the wire: epoch milliseconds or an RFC 3339 string. After decoding: epoch ms.
WireTime: TypeAlias = EpochMs | Rfc3339
Amount: TypeAlias = Annotated[float, msgspec.Meta(ge=0.0, le=1e9)]
# Letter checks run in __post_init__ (a regex in the decoder would halve its speed);
# the JSON Schema still carries the pattern.
Currency: TypeAlias = Annotated[
    str, msgspec.Meta(min_length=3, max_length=3, extra_json_schema={"pattern": "^[A-Z]{3}$"})
]
Country: TypeAlias = Annotated[
    str, msgspec.Meta(min_length=2, max_length=2, extra_json_schema={"pattern": "^[A-Z]{2}$"})
]
Latitude: TypeAlias = Annotated[float, msgspec.Meta(ge=-90.0, le=90.0)]
Longitude: TypeAlias = Annotated[float, msgspec.Meta(ge=-180.0, le=180.0)]
ShortText: TypeAlias = Annotated[str, msgspec.Meta(max_length=64)]
Decision: TypeAlias = Literal["review", "block"]


def _capital_letters(code: str) -> bool:
    return code.isascii() and code.isalpha() and code.isupper()


def _to_epoch_ms(value: int | dt.datetime, field: str) -> int:
    """Epoch ms of a decoded time; errors start with the field's name (RecordError names it)."""
    if isinstance(value, int):
        return value
    if not isinstance(value, dt.datetime) or value.tzinfo is None:
        raise TypeError(
            f"{field}: expected epoch milliseconds (int) or a timezone-aware datetime, got {value!r}; "
            "decode strings with decode_transaction / decode_label"
        )
    ms = int(value.timestamp() * 1000)
    if not _MIN_TIME_MS <= ms <= _MAX_TIME_MS:
        raise ValueError(f"{field}: {value.isoformat()} is not between 2000-01-01 and 2100-01-01")
    return ms


class Transaction(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A card or account payment, as it travels on the ``transactions`` topic.

    Only ``transaction_id``, ``account_id``, ``event_time`` and ``amount`` are
    required, so that other sources' data fits; features that need an absent
    field treat it as neutral.
    """

    transaction_id: Id
    account_id: Id
    if TYPE_CHECKING:  # what every constructed record holds: __post_init__ turns a wire time into epoch ms
        event_time: int
    else:
        #: Epoch milliseconds (UTC) after decoding; RFC 3339 accepted on the wire.
        event_time: WireTime
    amount: Amount
    currency: Currency | None = None
    merchant_id: Id | None = None
    merchant_category: ShortText | None = None
    terminal_id: Id | None = None
    device_id: Id | None = None
    country: Country | None = None
    lat: Latitude | None = None
    lon: Longitude | None = None
    channel: ShortText | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.event_time, int):
            msgspec.structs.force_setattr(self, "event_time", _to_epoch_ms(self.event_time, "event_time"))
        if (self.lat is None) != (self.lon is None):
            raise ValueError("lat: lat and lon must be given together or both left out")
        if self.currency is not None and not _capital_letters(self.currency):
            raise ValueError(f"currency: expected three capital letters, got {self.currency!r}")
        if self.country is not None and not _capital_letters(self.country):
            raise ValueError(f"country: expected two capital letters, got {self.country!r}")


class Label(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Delayed ground truth for one transaction, on the ``labels`` topic."""

    transaction_id: Id
    account_id: Id
    label: Literal["fraud", "genuine"]
    if TYPE_CHECKING:  # epoch ms once constructed, as event_time
        label_time: int
    else:
        #: When the label became known (epoch ms after decoding).
        label_time: WireTime

    def __post_init__(self) -> None:
        if not isinstance(self.label_time, int):
            msgspec.structs.force_setattr(self, "label_time", _to_epoch_ms(self.label_time, "label_time"))


class FeatureContribution(msgspec.Struct, frozen=True, kw_only=True):
    """One feature's part in a score: its value and signed contribution."""

    name: str
    value: float
    contribution: float


class Reasons(msgspec.Struct, frozen=True, kw_only=True):
    """Why an alert fired: the rules that matched and the features that weighed most."""

    rules: list[str] = []
    top_features: list[FeatureContribution] = []


class SourcePosition(msgspec.Struct, frozen=True, kw_only=True):
    """Where a record was read: topic, partition and offset, and its Kafka timestamp when known."""

    topic: str
    partition: Annotated[int, msgspec.Meta(ge=0)]
    offset: Annotated[int, msgspec.Meta(ge=0)]
    #: The record's Kafka timestamp (epoch ms): when it entered Kafka (the producer's CreateTime, or the
    #: broker's LogAppendTime when the topic says so). None: not recorded.
    timestamp: EpochMs | None = None


class Alert(msgspec.Struct, frozen=True, kw_only=True):
    """An explained alert on the ``alerts`` topic (key = account_id).

    ``alert_id`` is deterministic (derived from the transaction and the decision
    inputs), so an alert re-emitted after a replay is recognisably the same alert.
    """

    alert_id: Id
    transaction_id: Id
    account_id: Id
    event_time: EpochMs
    score: float
    decision: Decision
    reasons: Reasons
    #: Model name -> version (or alias resolution) used for this score.
    model_versions: dict[str, str]
    feature_version: str
    #: When the scoring actor scored the event (epoch ms, wall clock; after its fetch when it was held for the
    #: terminal table). Kafka to alert: ``alert_time - source.timestamp``.
    ingest_time: EpochMs
    #: When the alert was produced (epoch ms).
    alert_time: EpochMs
    #: True when the event arrived behind its partition's watermark.
    late: bool = False
    #: The challenger model's score when one runs in shadow.
    challenger_score: float | None = None
    source: SourcePosition | None = None
    schema_version: int = ALERT_SCHEMA_VERSION


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    """A record that could not be accepted, with the reason and where it was read.

    ``key`` and ``value`` are the original bytes (base64 in JSON). Above a
    configured size (``stream.dead_letter_embed_max_bytes``), or when the whole
    dead letter would be too large to send, they are referenced instead of
    embedded: ``bytes_omitted`` is true, ``key``/``value`` are null, and
    ``topic``/``partition``/``offset`` with ``value_size`` and ``value_sha256``
    find and check the original in the source topic.
    """

    key: bytes | None
    value: bytes | None
    topic: str
    partition: Annotated[int, msgspec.Meta(ge=0)]
    offset: Annotated[int, msgspec.Meta(ge=0)]
    #: The full, human-readable reason (names the field and the fix).
    error: str
    #: The offending field, when one can be named.
    field: str | None = None
    #: When the record was rejected (epoch ms).
    failed_at: EpochMs
    #: Size of the original value in bytes (null when it had none).
    value_size: Annotated[int, msgspec.Meta(ge=0)] | None = None
    #: SHA-256 (hex) of the original value, set when the bytes are not embedded.
    value_sha256: str | None = None
    #: True when ``key`` and ``value`` are referenced by position, not embedded.
    bytes_omitted: bool = False
    schema_version: int = DEAD_LETTER_SCHEMA_VERSION

    def without_bytes(self, why: str) -> DeadLetter:
        """This dead letter with the original bytes referenced (position, size, SHA-256), not embedded.

        >>> letter = DeadLetter(key=b"A1", value=b"x" * 10, topic="t", partition=0, offset=7, error="e",
        ...                     failed_at=_MIN_TIME_MS)
        >>> small = letter.without_bytes("too large to embed")
        >>> small.value, small.value_size, small.bytes_omitted, small.error
        (None, 10, True, 'e; original bytes not embedded: too large to embed')
        """
        if self.bytes_omitted:
            return self
        digest = None if self.value is None else hashlib.sha256(self.value).hexdigest()
        return msgspec.structs.replace(
            self, key=None, value=None, value_sha256=digest, bytes_omitted=True,
            value_size=None if self.value is None else len(self.value),
            error=f"{self.error}; original bytes not embedded: {why}",
        )


_encoder = msgspec.json.Encoder()
_transaction_decoder = msgspec.json.Decoder(Transaction)
_label_decoder = msgspec.json.Decoder(Label)
_alert_decoder = msgspec.json.Decoder(Alert)
_dead_letter_decoder = msgspec.json.Decoder(DeadLetter)
_dict_decoder = msgspec.json.Decoder(dict[str, Any])

RECORD_TYPES: dict[str, type[msgspec.Struct]] = {
    "transaction": Transaction,
    "label": Label,
    "alert": Alert,
    "dead_letter": DeadLetter,
}


def encode(record: msgspec.Struct) -> bytes:
    """Encode any record as compact UTF-8 JSON."""
    return _encoder.encode(record)


def _decode(decoder: msgspec.json.Decoder[Any], record: str, raw: bytes | str) -> Any:
    try:
        return decoder.decode(raw)
    except msgspec.MsgspecError as exc:
        raise RecordError.from_msgspec(record, exc) from None


def decode_transaction(raw: bytes | str) -> Transaction:
    """Decode and validate one transaction; raises :class:`RecordError`."""
    return _decode(_transaction_decoder, "transaction", raw)  # type: ignore[no-any-return]


def decode_label(raw: bytes | str) -> Label:
    """Decode and validate one label; raises :class:`RecordError`."""
    return _decode(_label_decoder, "label", raw)  # type: ignore[no-any-return]


def decode_alert(raw: bytes | str) -> Alert:
    """Decode and validate one alert (for alert consumers); raises :class:`RecordError`."""
    return _decode(_alert_decoder, "alert", raw)  # type: ignore[no-any-return]


def decode_dead_letter(raw: bytes | str) -> DeadLetter:
    """Decode one dead-letter entry; raises :class:`RecordError`."""
    return _decode(_dead_letter_decoder, "dead_letter", raw)  # type: ignore[no-any-return]


def decode_batch(
    decoder: msgspec.json.Decoder[Any],
    record: str,
    values: list[bytes | None],
    limits: DecodeLimits = DEFAULT_LIMITS,
) -> tuple[list[Any], list[tuple[int, RecordError]]]:
    """Decode a micro-batch with ``decoder``: the good records, and (index, error) for the rest.

    Nothing a value holds makes this raise: ``limits`` are checked before parsing
    (:func:`contracts.guards.check_raw`), and any other exception the parser
    raises becomes that value's error too.
    """
    good: list[Any] = []
    bad: list[tuple[int, RecordError]] = []
    decode = decoder.decode
    append = good.append
    max_bytes, max_brackets = limits.max_record_bytes, limits.max_nesting_depth
    for index, raw in enumerate(values):
        # the common case (flat ASCII) costs a few memchr-speed calls (bytes.count is ~1 ns a byte:
        # brackets are counted only when there is a second one); check_raw says which limit broke, and where
        if raw is None or len(raw) > max_bytes or not raw.isascii() or (
                (raw.find(b"[") >= 0 or raw.find(b"{", 1) >= 0)
                and raw.count(b"[") + raw.count(b"{") > max_brackets):
            refused = check_raw(record, raw, limits)
            if refused is not None:
                bad.append((index, refused))
                continue
        try:
            append(decode(raw))  # type: ignore[arg-type]
        except msgspec.MsgspecError as exc:
            bad.append((index, RecordError.from_msgspec(record, exc)))
        except Exception as exc:
            bad.append((index, RecordError(record, None, f"could not be decoded ({type(exc).__name__}: {exc})")))
    return good, bad


def decode_transactions(
    values: list[bytes | None], limits: DecodeLimits = DEFAULT_LIMITS
) -> tuple[list[Transaction], list[tuple[int, RecordError]]]:
    """Decode a micro-batch: the good records, and (index, error) for the rest (never raises).

    >>> good, bad = decode_transactions([
    ...     b'{"transaction_id":"t1","account_id":"a","event_time":1767225600000,"amount":3}',
    ...     b'{"transaction_id":"t2","account_id":"a","event_time":1767225600000}',
    ...     b'{"transaction_id":"t3","account_id":"a","event_time":1767225600000,"amount":1,"x":'
    ...     + b'[' * 1000 + b']' * 1000 + b'}'])
    >>> [t.transaction_id for t in good], [(i, e.field) for i, e in bad]
    (['t1'], [(1, 'amount'), (2, 'x')])
    """
    return decode_batch(_transaction_decoder, "transaction", values, limits)


def decode_labels(
    values: list[bytes | None], limits: DecodeLimits = DEFAULT_LIMITS
) -> tuple[list[Label], list[tuple[int, RecordError]]]:
    """Decode a micro-batch of labels, like :func:`decode_transactions` (never raises).

    >>> good, bad = decode_labels([b'{"transaction_id":"t1","account_id":"a","label":"fraud",'
    ...                            b'"label_time":"9999-12-31T23:59:59Z"}'])
    >>> bad[0][1].field
    'label_time'
    """
    return decode_batch(_label_decoder, "label", values, limits)


def extra_fields(raw: bytes | str, record_type: type[msgspec.Struct] = Transaction) -> dict[str, Any]:
    """The fields of a raw record that its type does not know (kept, never fatal).

    >>> extra_fields(b'{"transaction_id":"t1","amount":3,"mcc_risk":"high"}')
    {'mcc_risk': 'high'}
    """
    known = set(record_type.__struct_fields__)
    return {k: v for k, v in _dict_decoder.decode(raw).items() if k not in known}
