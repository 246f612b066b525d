"""JSON Schema files for the four message contracts, generated from the records.

The files under ``schemas/`` are what other teams read; a test keeps them equal
to what this module generates, so they cannot drift from the code.
Regenerate with ``python -m contracts.schemas``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import msgspec

from contracts.records import ALERT_SCHEMA_VERSION, DEAD_LETTER_SCHEMA_VERSION, RECORD_TYPES

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"
_VERSIONS = {"transaction": 1, "label": 1, "alert": ALERT_SCHEMA_VERSION, "dead_letter": DEAD_LETTER_SCHEMA_VERSION}
_TOPICS = {"transaction": "transactions", "label": "labels", "alert": "alerts", "dead_letter": "transactions.dlq"}


def json_schema(record: str) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of one record type by name."""
    schema = msgspec.json.schema(RECORD_TYPES[record])
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://fraudstream.dev/schemas/{record}.v{_VERSIONS[record]}.schema.json",
        "title": f"fraudstream {record} (topic `{_TOPICS[record]}`), schema version {_VERSIONS[record]}",
        **schema,
    }


def render(record: str) -> str:
    return json.dumps(json_schema(record), indent=2, sort_keys=True) + "\n"


def write_schemas(directory: Path = SCHEMA_DIR) -> list[Path]:
    """Write ``<record>.schema.json`` for every record type; returns the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for record in RECORD_TYPES:
        path = directory / f"{record}.schema.json"
        path.write_text(render(record), encoding="utf-8")
        paths.append(path)
    return paths


if __name__ == "__main__":
    for written in write_schemas(Path(sys.argv[1]) if len(sys.argv) > 1 else SCHEMA_DIR):
        print(written)
