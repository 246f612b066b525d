"""Decode errors that name the field, the problem and the fix."""

from __future__ import annotations

import re

import msgspec

_AT_PATH = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_MISSING = re.compile(r"missing required field `(?P<field>[^`]+)`")
_UNKNOWN = re.compile(r"unknown field `(?P<field>[^`]+)`")
# Checks in a record's __post_init__ raise "field: problem".
_NAMED = re.compile(r"^(?P<field>[a-z_]+): (?P<problem>.*)$", re.S)

# What a producer should do when a field is wrong, by field name.
FIELD_FIXES: dict[str, str] = {
    "transaction_id": "send a non-empty string of at most 128 characters",
    "account_id": "send a non-empty string of at most 128 characters",
    "event_time": (
        "send epoch milliseconds (an integer, not seconds) or an RFC 3339 string "
        "with a UTC offset, e.g. 2026-05-01T12:00:00Z"
    ),
    "label_time": (
        "send epoch milliseconds (an integer, not seconds) or an RFC 3339 string "
        "with a UTC offset, e.g. 2026-05-01T12:00:00Z"
    ),
    "amount": "send a JSON number between 0 and 1e9",
    "currency": "send an ISO 4217 code of three capital letters, e.g. EUR",
    "country": "send an ISO 3166-1 alpha-2 code of two capital letters, e.g. GB",
    "lat": "send a JSON number between -90 and 90, or leave the field out",
    "lon": "send a JSON number between -180 and 180, or leave the field out",
    "label": 'send "fraud" or "genuine"',
}


class RecordError(ValueError):
    """A record that cannot be accepted, with the offending field and the remedy.

    >>> err = RecordError("transaction", "amount", "Expected `float`, got `str`")
    >>> str(err)
    'transaction.amount: Expected `float`, got `str` (fix: send a JSON number between 0 and 1e9)'
    >>> err.field
    'amount'
    """

    def __init__(self, record: str, field: str | None, problem: str, fix: str | None = None) -> None:
        self.record = record
        self.field = field
        self.problem = problem
        self.fix = fix or FIELD_FIXES.get(field or "", "send valid UTF-8 JSON matching schemas/")
        where = f"{record}.{field}" if field else record
        super().__init__(f"{where}: {problem} (fix: {self.fix})")

    @classmethod
    def from_msgspec(cls, record: str, exc: msgspec.MsgspecError) -> RecordError:
        """Translate a msgspec decode/validation error into a RecordError."""
        message = str(exc)
        if not isinstance(exc, msgspec.ValidationError):
            return cls(record, None, f"not valid JSON ({message})")
        at = _AT_PATH.search(message)
        path = at.group("path").lstrip(".") if at else ""
        problem = message[: at.start()] if at else message
        for pattern, fixed_problem in ((_MISSING, "required field is missing"), (_UNKNOWN, "unknown field")):
            found = pattern.search(problem)
            if found:
                return cls(record, f"{path}.{found.group('field')}".lstrip("."), fixed_problem)
        named = _NAMED.match(problem)
        if named:
            return cls(record, f"{path}.{named.group('field')}".lstrip("."), named.group("problem"))
        if not path and problem.startswith("Expected `object`"):
            return cls(record, None, problem + "; a record must be a JSON object")
        return cls(record, path or None, problem)
