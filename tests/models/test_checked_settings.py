"""models/checked_settings.py: the settings loader of every entry point compiles the rules file that ``configs``
only reads (``configs`` sits below the feature registry and cannot)."""

from __future__ import annotations

from pathlib import Path

import pytest

import configs
from configs import ConfigError
from models import checked_settings


def _config(folder: Path, rules: str) -> Path:
    (folder / "rules.yaml").write_text(rules)
    config = folder / "config.yaml"
    config.write_text("scoring: {rules_file: rules.yaml}\n")
    return config


def test_configs_reads_the_rules_file_and_the_checked_loader_compiles_it(tmp_path: Path) -> None:
    config = _config(tmp_path, 'rules:\n  - {name: fast, when: "speed > 900", action: block, score: 0.99}\n')
    unchecked = configs.load_settings(config)  # the shape is fine: configs alone takes it
    assert [rule.when for rule in unchecked.scoring.rules] == ["speed > 900"]
    assert unchecked.scoring.rules_file == str((tmp_path / "rules.yaml").resolve())
    with pytest.raises(ConfigError, match=r"rules\[0\]\.when: rule 'fast': unknown feature 'speed' .* \[in "):
        checked_settings.load_settings(config)
    with pytest.raises(ConfigError, match=r"rules\[0\]\.when: rule 'fast': unknown feature 'speed'"):
        checked_settings.settings_from_dict({"scoring": {"rules_file": str(tmp_path / "rules.yaml")}})


def test_a_review_rule_at_the_block_threshold_stops_either_loader_in_one_line(tmp_path: Path) -> None:
    config = _config(tmp_path, 'rules:\n  - {name: a, when: "amount > 1", action: review, score: 0.9999}\n')
    expected = (
        f"config error: {(tmp_path / 'rules.yaml').resolve()}: rules[0].score: review rule 'a' has score 0.9999 >= "
        f"block_threshold 0.9995, so its matches would be blocked; lower its score or set action: block [in {config}]"
    )
    for load in (configs.load_settings, checked_settings.load_settings):
        with pytest.raises(ConfigError) as error:
            load(config)
        assert str(error.value) == expected


def test_without_a_rules_file_both_loaders_agree(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("scoring: {rules_file: ''}\n")
    assert checked_settings.load_settings(config) == configs.load_settings(config)
    assert checked_settings.settings_from_dict({"generator": {"days": 3}}).generator.days == 3
