"""Rules in a YAML file (``scoring.rules_file``): parsed, checked and compiled, every mistake one line naming
the file, the rule and the fix; loaded where the settings are; fingerprinted for the watcher."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from configs import ConfigError, RuleSettings, ScoringSettings
from configs.settings import read_rules_file
from features import FeatureRegistry
from models.checked_settings import load_settings, settings_from_dict
from models.rules import load_rules_file, rules_fingerprint

GOOD = """rules:
  - {name: card_testing, when: "count_10m >= 3 and mean_10m < 3", action: block, score: 0.99}
  - name: big_amount
    when: "amount > 5000"
"""


def _file(tmp_path: Path, text: str, name: str = "rules.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_rules_file_gives_the_rules_of_the_same_shape_as_scoring_rules(
    tmp_path: Path, registry: FeatureRegistry
) -> None:
    rules = load_rules_file(_file(tmp_path, GOOD), registry.names)
    assert rules == (
        RuleSettings(name="card_testing", when="count_10m >= 3 and mean_10m < 3", action="block", score=0.99),
        RuleSettings(name="big_amount", when="amount > 5000", action="review", score=0.9),  # the defaults
    )
    assert load_rules_file(_file(tmp_path, "rules: []\n"), registry.names) == ()


def test_the_bundled_rules_file_holds_the_default_rules(registry: FeatureRegistry) -> None:
    bundled = Path(__file__).parents[2] / "configs" / "rules.yaml"
    assert load_rules_file(bundled, registry.names, ScoringSettings().block_threshold) == ScoringSettings().rules


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # the condition: compiled against the features
        ('rules:\n  - {name: a, when: "amount > 1"}\n  - {name: b, when: "amountt > 5"}\n',
         "rules[1].when: rule 'b': unknown feature 'amountt' (did you mean: amount"),
        ('rules:\n  - {name: a, when: "amount > 1 and"}\n',
         "rules[0].when: rule 'a': not a valid condition (invalid syntax); write comparisons"),
        ('rules:\n  - {name: a, when: "amount > 1 & count_1h > 2"}\n',
         "rules[0].when: rule 'a': `&` and `|` are not allowed; join comparisons with `and` / `or`"),
        ('rules:\n  - {name: a, when: "1 < amount < 5"}\n', "rules[0].when: rule 'a': `1 < amount < 5` chains comparisons"),
        # names, actions, scores, keys
        ('rules:\n  - {name: a, when: "amount > 1"}\n  - {name: a, when: "amount > 2"}\n',
         "rules[1].name: rule 'a' is also rules[0]; give each rule its own name"),
        ('rules:\n  - {name: a, when: "amount > 1", action: alert}\n',
         "rules[0].action: rule 'a': Invalid enum value 'alert' (allowed: 'review', 'block')"),
        ('rules:\n  - {name: a, when: "amount > 1", score: 1.5}\n', "rules[0].score: rule 'a': Expected `float` <= 1.0"),
        ('rules:\n  - {name: a, when: "amount > 1", acton: block}\n',
         "rules[0].acton: rule 'a': unknown key (allowed: name, when, action, score)"),
        ("rules:\n  - {name: a}\n", "rules[0].when: rule 'a': required key is missing"),
        ('rules:\n  - {name: Big-One, when: "amount > 1"}\n', "rules[0].name: rule 'Big-One': Expected `str` matching"),
        ("rules:\n  - amount > 1\n", "rules[0]: Expected `object`, got `str`"),
        # the file's shape
        ("rules:\n  name: a\n", "rules: expected a list of rules, got dict"),
        ('rulez:\n  - {name: a, when: "amount > 1"}\n', "rulez: unknown key (allowed: rules)"),
        ("other: 1\n", "other: unknown key (allowed: rules)"),
        ("", "expected a mapping with a list of rules, e.g. rules: [{name:"),
        ("rules:\n  - {name: a, when: [\n", "line 3: not valid YAML"),
    ],
)
def test_every_mistake_is_one_line_naming_the_file_the_rule_and_the_fix(
    tmp_path: Path, registry: FeatureRegistry, text: str, expected: str
) -> None:
    path = _file(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        load_rules_file(path, registry.names)
    message = str(error.value)
    assert message.startswith(f"config error: {path}"), message
    assert expected in message, message
    assert "\n" not in message


def test_a_missing_file_names_the_key_and_both_fixes(tmp_path: Path, registry: FeatureRegistry) -> None:
    with pytest.raises(ConfigError) as error:
        load_rules_file(tmp_path / "nope.yaml", registry.names)
    assert str(error.value).startswith(f"config error: scoring.rules_file: file '{tmp_path / 'nope.yaml'}' not found; ")
    assert 'create it (rules: [' in str(error.value) and 'set scoring.rules_file: ""' in str(error.value)


def test_a_review_rule_scoring_at_the_block_threshold_is_refused(tmp_path: Path, registry: FeatureRegistry) -> None:
    path = _file(tmp_path, 'rules:\n  - {name: a, when: "amount > 1", action: review, score: 0.9999}\n')
    assert read_rules_file(path)[0].score == 0.9999  # the shape alone is fine
    with pytest.raises(ConfigError) as error:
        load_rules_file(path, registry.names, block_threshold=0.9995)
    assert str(error.value) == (
        f"config error: {path}: rules[0].score: review rule 'a' has score 0.9999 >= block_threshold 0.9995, "
        "so its matches would be blocked; lower its score or set action: block"
    )


def test_load_settings_reads_the_file_relative_to_the_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "conf"
    folder.mkdir()
    _file(folder, GOOD)
    config = _file(folder, "scoring: {rules_file: rules.yaml}\n", "config.yaml")
    monkeypatch.chdir(tmp_path)  # elsewhere: the path resolves against the config's folder, not here
    scoring = load_settings(config).scoring
    assert scoring.rules_file == str((folder / "rules.yaml").resolve())  # absolute, for the watcher and actors
    assert [rule.name for rule in scoring.rules] == ["card_testing", "big_amount"]
    # without a config file (a mapping), relative paths resolve against the working directory
    monkeypatch.chdir(folder)
    assert settings_from_dict({"scoring": {"rules_file": "rules.yaml"}}).scoring.rules == scoring.rules
    # no file: the inline rules, as before
    assert load_settings(_file(folder, "scoring: {}\n", "inline.yaml")).scoring.rules == ScoringSettings().rules


def test_load_settings_stops_on_a_bad_rules_file_and_on_rules_given_twice(tmp_path: Path) -> None:
    _file(tmp_path, 'rules:\n  - {name: fast, when: "speed > 900", action: block, score: 0.99}\n')
    config = _file(tmp_path, "scoring: {rules_file: rules.yaml}\n", "config.yaml")
    with pytest.raises(ConfigError) as error:
        load_settings(config)
    assert str(error.value) == (
        f"config error: {tmp_path / 'rules.yaml'}: rules[0].when: rule 'fast': unknown feature 'speed' "
        f"(did you mean: speed_kmh?) [in {config}]"
    )
    both = _file(tmp_path, 'scoring:\n  rules_file: rules.yaml\n  rules: [{name: a, when: "amount > 1"}]\n', "both.yaml")
    with pytest.raises(ConfigError, match=r"scoring.rules_file: set together with scoring.rules, whose rules it "
                                          r"would replace; remove scoring.rules"):  # fmt: skip
        load_settings(both)


def test_a_bad_rules_file_stops_the_command_line_with_one_line_and_no_traceback(tmp_path: Path) -> None:
    _file(tmp_path, 'rules:\n  - {name: typo, when: "amountt > 5", action: review, score: 0.97}\n')
    config = _file(tmp_path, "scoring: {rules_file: rules.yaml}\n", "config.yaml")
    for command in (["pipelines.cli", "run", "--config", str(config)], ["pipelines.stream", "--config", str(config)]):
        done = subprocess.run([sys.executable, "-m", *command], capture_output=True, text=True, timeout=120, check=False,
                              cwd=Path(__file__).parents[2])  # fmt: skip
        assert done.returncode == 2, (command, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr, done.stderr
        assert "rules[0].when: rule 'typo': unknown feature 'amountt' (did you mean: amount" in done.stderr
        assert str(tmp_path / "rules.yaml") in done.stderr.replace("\n", "")


def test_the_fingerprint_changes_with_the_content_and_survives_a_missing_file(tmp_path: Path) -> None:
    path = _file(tmp_path, GOOD)
    first = rules_fingerprint(path)
    assert rules_fingerprint(path) == first
    stat = path.stat()
    path.write_text(GOOD.replace("5000", "6000"))  # same size ...
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # ... and the same modification time
    edited = rules_fingerprint(path)
    assert edited != first
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # touched only
    assert rules_fingerprint(path) not in (first, edited)
    path.unlink()
    gone = rules_fingerprint(path)
    assert gone.startswith("missing: ") and gone != edited
    path.write_text(GOOD)
    assert rules_fingerprint(path) != gone  # back
