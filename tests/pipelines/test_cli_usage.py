"""Bad command-line input ends with a usage line and exit code 2, not a traceback; nothing starts."""

from __future__ import annotations

import pytest

from tests.integration.streamkit import run_cli


def test_a_value_of_the_wrong_type_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(monkeypatch, capsys, "produce", "--rate", "abc")
    assert code == 2
    assert "Invalid value for '--rate'" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--days", "12", "--live-days", "7"], "--days 12 leaves 5 days to train on"),
        (["--live-days", "0"], "--live-days: at least 1"),
        (["--accounts", "10"], "--accounts: at least 100"),
        (["--rate", "-5"], "--rate: transactions per second >= 0"),
        (["--actors", "0"], "--actors: at least 1"),
    ],
)
def test_demo_options_are_checked_before_anything_starts(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path, args: list[str], named: str
) -> None:
    code, _, err = run_cli(monkeypatch, capsys, "demo", "--reports", str(tmp_path / "reports"), *args)
    assert code == 2
    assert named in " ".join(err.split())
    assert not (tmp_path / "reports").exists()  # no report folder for a run that never started
