"""The stream job's rules-file watcher: a change is read once the file stopped changing for one poll."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from configs import ConfigError, load_settings
from pipelines.stream import RulesWatcher


def _settings(path: Path):  # type: ignore[no-untyped-def]
    base = load_settings()
    return msgspec.structs.replace(base, scoring=msgspec.structs.replace(base.scoring, rules_file=str(path)))


def _write(path: Path, name: str, when: str) -> None:
    path.write_text(f'rules:\n  - {{name: {name}, when: "{when}", action: review, score: 0.97}}\n')


def test_a_change_is_read_after_it_settles_and_a_bad_one_is_reported_once(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    _write(path, "first", "amount > 10")
    watcher = RulesWatcher(_settings(path))
    assert watcher.changed() is None  # nothing changed since start
    _write(path, "second", "amount > 20")
    assert watcher.changed() is None  # seen once: maybe still being written
    path.write_text(path.read_text() + '  - {name: third, when: "amount > 30", action: review, score: 0.97}\n')
    assert watcher.changed() is None  # it changed again: wait again
    rules = watcher.changed()
    assert rules is not None and [r.name for r in rules] == ["second", "third"] and watcher.error is None
    assert watcher.changed() is None  # read once per change
    _write(path, "typo", "amountt > 5")
    assert watcher.changed() is None
    with pytest.raises(ConfigError, match="amountt"):
        watcher.changed()
    assert watcher.error is not None and "amountt" in watcher.error
    assert watcher.changed() is None  # reported once, the previous rules stay
