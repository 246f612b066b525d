"""The console section: users with password hashes and roles, and where it may listen."""

from __future__ import annotations

import pytest

from configs import ConfigError, ConsoleSettings, Settings
from configs.settings import settings_from_dict

HASH = "scrypt$1024$8$1$" + "A" * 24 + "$" + "B" * 44


def test_the_defaults_serve_on_loopback_without_users() -> None:
    console = Settings().console
    assert (console.host, console.port, console.users, console.max_alerts) == ("127.0.0.1", 8765, {}, 10_000)
    assert console.loopback and console.exposure_problem() is None


@pytest.mark.parametrize(
    ("console", "expected"),
    [
        ({"users": {"ana": {"password_hash": HASH, "role": "admin"}}},
         "console.users.ana.role: unknown role 'admin' (allowed: viewer, analyst)"),
        ({"users": {"ana": {"password_hash": "hunter2", "role": "analyst"}}},
         "console.users.ana.password_hash: not a password hash (expected scrypt$N$r$p$salt$hash); never put a "
         "password in the config: make the hash with `fraudstream console hash-password`"),
        ({"users": {"ana": {"password": "hunter2"}}},
         "a password is never read from the config; give password_hash, made with `fraudstream console hash-password`"),
        ({"users": {"ana": {"role": "viewer"}}}, "password_hash: required key is missing"),
        ({"users": {"a b": {"password_hash": HASH}}}, "console.users: 'a b' is not a user name"),
        ({"port": 70000}, "console.port: Expected `int` <= 65535"),
        ({"session_ttl_s": 0}, "console.session_ttl_s: Expected `float` > 0.0"),
        ({"max_alerts": 0}, "console.max_alerts: Expected `int` >= 1"),
        ({"registry_interval_s": 0}, "console.registry_interval_s: Expected `float` > 0.0"),
        ({"hots": "0.0.0.0"}, "console.hots: unknown key (allowed: host, port, users"),
    ],
)  # fmt: skip
def test_a_bad_console_section_stops_with_one_line_naming_the_key(console: dict[str, object], expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        settings_from_dict({"console": console})
    message = str(caught.value)
    assert expected in message and "\n" not in message


def test_a_console_open_to_the_network_needs_users() -> None:
    exposed = ConsoleSettings(host="0.0.0.0")
    assert not exposed.loopback
    assert exposed.exposure_problem() == (
        "config error: console.host: 0.0.0.0 is not a loopback address and console.users is empty, so anyone who "
        "reaches it could read alerts and give verdicts; add console.users (password hashes from "
        "`fraudstream console hash-password`) or set console.host: 127.0.0.1")
    with_users = settings_from_dict({"console": {"host": "0.0.0.0", "users": {"ana": {"password_hash": HASH}}}})
    assert with_users.console.exposure_problem() is None and with_users.console.users["ana"].role == "viewer"
    for host in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"):
        assert ConsoleSettings(host=host).loopback, host
    for host in ("10.0.0.5", "console.example.com", "::"):
        assert not ConsoleSettings(host=host).loopback, host
