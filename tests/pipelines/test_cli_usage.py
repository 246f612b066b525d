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


def test_a_bad_config_is_one_line_naming_it_in_both_command_lines(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path
) -> None:
    from pipelines.stream import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("kafka:\n  security_protocol: TLS\n")
    line = (f"error: config error: kafka.security_protocol: Invalid enum value 'TLS' (allowed: 'PLAINTEXT', 'SSL', "
            f"'SASL_SSL') [in {bad}]")  # fmt: skip
    code, out, err = run_cli(monkeypatch, capsys, "status", "--config", str(bad))
    assert (code, out, err.strip().splitlines()) == (2, "", [line])
    assert main(["--config", str(bad)]) == 2  # python -m pipelines.stream
    assert capsys.readouterr().err.strip().splitlines() == [line]
