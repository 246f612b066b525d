"""Checks a raw record passes before it is parsed: present, small enough, UTF-8, not nested too deep.

A hostile or broken producer can send bytes that make a JSON parser raise
something other than a decode error (``RecursionError`` on deep nesting,
``UnicodeDecodeError`` on raw invalid UTF-8) or spend long on one record. These
checks run first and turn every such record into a :class:`RecordError` naming
the field, so the record is dead-lettered and its partition goes on.

Cheap on good records: the size test and two ``bytes.count`` calls (C speed);
only a record with more brackets than the depth limit, or with non-ASCII
bytes, is looked at more closely.

>>> limits = DecodeLimits(max_record_bytes=1_000, max_nesting_depth=4)
>>> check_raw("transaction", b'{"amount": 1, "x": [[[[[1]]]]]}', limits).field
'x'
>>> check_raw("transaction", b'{"amount": 1}', limits) is None
True
"""

from __future__ import annotations

import re

import msgspec

from contracts.errors import RecordError

_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"(?:\s*:)?|[\[\]{}]', re.S)
_OPEN = frozenset(b"[{")


class DecodeLimits(msgspec.Struct, frozen=True, kw_only=True):
    """Limits a record must stay within to be parsed at all (from ``stream.max_record_bytes`` etc.)."""

    #: Largest record value accepted, in bytes.
    max_record_bytes: int = 1_000_000
    #: Deepest nesting of arrays and objects accepted (the record itself is level 1).
    max_nesting_depth: int = 32


DEFAULT_LIMITS = DecodeLimits()


def top_level_field(raw: bytes, position: int) -> str | None:
    """The name of the top-level field whose value holds byte ``position`` (None outside any).

    >>> top_level_field(b'{"a": 1, "b": "x\\xff"}', 17)
    'b'
    """
    depth, key = 0, None
    for token in _TOKENS.finditer(raw):
        if token.start() > position:
            break
        key, depth = _advance(token.group(), depth, key)
    return key if depth >= 1 else None


def _advance(token: bytes, depth: int, key: str | None) -> tuple[str | None, int]:
    first = token[0]
    if first == 0x22:  # a string; at depth 1 followed by ':' it names a top-level field
        if depth == 1 and token.endswith(b":"):
            key = token[1 : token.rindex(b'"')].decode("utf-8", "replace")
    elif first in _OPEN:
        depth += 1
    else:
        depth -= 1
    return key, depth


def nesting_overflow(raw: bytes, max_depth: int) -> tuple[int, str | None] | None:
    """(byte position, top-level field) where nesting first goes deeper than ``max_depth``; None if never.

    Brackets inside strings do not count.

    >>> nesting_overflow(b'{"note": "[[[[", "x": {"y": [1]}}', 2)
    (28, 'x')
    >>> nesting_overflow(b'{"note": "[[[["}', 1) is None
    True
    """
    depth, key = 0, None
    for token in _TOKENS.finditer(raw):
        key, depth = _advance(token.group(), depth, key)
        if depth > max_depth:
            return token.start(), key
    return None


def check_raw(record: str, raw: bytes | None, limits: DecodeLimits) -> RecordError | None:
    """Why ``raw`` must not be parsed (a :class:`RecordError` naming the field), or None."""
    if raw is None:
        return RecordError(record, "value", "the Kafka record has no value (null)",
                           fix=f"send the {record} as a JSON object; null values (tombstones) do not belong here")
    size = len(raw)
    if size > limits.max_record_bytes:
        return RecordError(record, "value", f"{size} bytes, more than the {limits.max_record_bytes} a record may have",
                           fix=f"send records of at most {limits.max_record_bytes} bytes or raise stream.max_record_bytes")
    if raw.count(b"[") + raw.count(b"{") > limits.max_nesting_depth:
        overflow = nesting_overflow(raw, limits.max_nesting_depth)
        if overflow is not None:
            position, key = overflow
            return RecordError(
                record, key, f"nested deeper than {limits.max_nesting_depth} levels (at byte {position})",
                fix=f"nest arrays and objects at most {limits.max_nesting_depth} deep or raise stream.max_nesting_depth",
            )
    if not raw.isascii():
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            return RecordError(record, top_level_field(raw, exc.start),
                               f"not UTF-8 ({exc.reason}, byte 0x{raw[exc.start]:02x} at {exc.start})",
                               fix="encode the whole record as UTF-8")
    return None
