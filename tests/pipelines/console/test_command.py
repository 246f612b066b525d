"""`fraudstream console` start-up refusals (one line, exit 2, before any broker is touched) and `hash-password`."""

from __future__ import annotations

import io
import socket
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from configs.settings import settings_from_dict
from pipelines.console.auth import verify_password
from tests.integration.streamkit import run_cli


def config(tmp_path: Path, **console: Any) -> str:
    path = tmp_path / "console.yaml"
    data = {"kafka": {"embedded": False, "bootstrap_servers": ["127.0.0.1:9"]},
            "console": {"audit_path": str(tmp_path / "verdicts.jsonl"), **console}}  # fmt: skip
    path.write_text(yaml.safe_dump(data))
    return str(path)


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_a_console_open_to_the_network_without_users_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run_cli(monkeypatch, capsys, "console", "--config", config(tmp_path, host="0.0.0.0"))
    assert code == 2
    line = one_error_line(err)
    assert "console.host: 0.0.0.0 is not a loopback address and console.users is empty" in line
    assert "add console.users" in line and "or set console.host: 127.0.0.1" in line


def test_a_port_taken_a_bad_port_an_unwritable_audit_log_and_a_short_secret_are_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = str(taken.getsockname()[1])
        code, _, err = run_cli(monkeypatch, capsys, "console", "--config", config(tmp_path), "--port", port)
    assert code == 2 and f"console.port: cannot listen on 127.0.0.1:{port}" in one_error_line(err)
    assert "choose another with --port" in err
    code, _, err = run_cli(monkeypatch, capsys, "console", "--config", config(tmp_path), "--port", "70000")
    assert code == 2 and "console.port: Expected `int` <= 65535" in one_error_line(err)
    (tmp_path / "a-file").write_text("")
    code, _, err = run_cli(monkeypatch, capsys, "console", "--config",
                           config(tmp_path, audit_path=str(tmp_path / "a-file" / "verdicts.jsonl")))  # fmt: skip
    assert code == 2 and "console.audit_path: cannot write" in one_error_line(err)
    monkeypatch.setenv("FRAUDSTREAM_CONSOLE_SECRET", "short")
    code, _, err = run_cli(monkeypatch, capsys, "console", "--config", config(tmp_path))
    assert code == 2 and "FRAUDSTREAM_CONSOLE_SECRET holds fewer than 32 characters" in one_error_line(err)


def test_hash_password_prints_a_hash_the_config_takes_and_refuses_an_empty_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("correct horse\n"))
    code, out, _ = run_cli(monkeypatch, capsys, "console", "hash-password")
    encoded = out.strip()
    assert code == 0 and verify_password("correct horse", encoded) and not verify_password("correct horse\n", encoded)
    accepted = settings_from_dict({"console": {"host": "0.0.0.0", "users": {"ana": {"password_hash": encoded}}}})
    assert accepted.console.exposure_problem() is None
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n"))
    code, _, err = run_cli(monkeypatch, capsys, "console", "hash-password")
    assert code == 2 and "the password is empty" in one_error_line(err)
