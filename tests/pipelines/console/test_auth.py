"""Password hashes, sessions, CSRF tokens and roles of the console (pure, no server)."""

from __future__ import annotations

import pytest

from configs import ConsoleSettings, ConsoleUser
from configs.settings import PASSWORD_HASH
from pipelines.console.auth import Directory, Principal, Sessions, csrf_matches, hash_password, verify_password
from tests.pipelines.console.consolekit import Clock

CHEAP = 2**10  # the tests' scrypt cost (the default, 2**14, takes ~50 ms a check)


def test_a_password_hash_is_salted_checks_only_its_password_and_is_what_the_config_takes() -> None:
    first, second = hash_password("pw-1", n=CHEAP), hash_password("pw-1", n=CHEAP)
    assert first != second  # a fresh salt each time
    assert verify_password("pw-1", first) and verify_password("pw-1", second)
    assert not verify_password("pw-2", first) and not verify_password("", first)
    assert PASSWORD_HASH.match(hash_password("pw-1"))  # the default cost too
    ConsoleSettings(users={"ana": ConsoleUser(password_hash=first, role="analyst")})  # accepted


@pytest.mark.parametrize("encoded", [
    "", "pw-1", "scrypt$1024$8$1$c2FsdA$aGFzaA",  # too short to be ours
    "scrypt$1000$8$1$" + "A" * 24 + "$" + "A" * 44,  # N not a power of two
    "scrypt$1099511627776$8$1$" + "A" * 24 + "$" + "A" * 44,  # beyond the memory bound
    "bcrypt$1024$8$1$" + "A" * 24 + "$" + "A" * 44,
])  # fmt: skip
def test_a_malformed_hash_never_matches_and_never_raises(encoded: str) -> None:
    assert verify_password("pw-1", encoded) is False


def test_an_empty_password_is_not_hashed() -> None:
    with pytest.raises(ValueError, match="empty"):
        hash_password("")


def test_the_directory_authenticates_and_takes_roles_from_the_config_not_the_session() -> None:
    users = {"ana": ConsoleUser(password_hash=hash_password("pw-a", n=CHEAP), role="analyst"),
             "vic": ConsoleUser(password_hash=hash_password("pw-v", n=CHEAP), role="viewer")}  # fmt: skip
    directory = Directory(users)
    assert directory.authenticate("ana", "pw-a") == Principal("ana", "analyst")
    assert directory.authenticate("ana", "pw-v") is None and directory.authenticate("eve", "pw-a") is None
    assert directory.principal("vic") == Principal("vic", "viewer")
    assert not directory.principal("vic").may_give_verdicts  # type: ignore[union-attr]
    assert Directory({"vic": users["vic"]}).principal("ana") is None  # removed from the config: signed out
    assert Directory({}).open and Directory({}).principal("local") == Principal("local", "analyst")
    assert Directory({}).principal("ana") is None


def test_a_session_token_is_signed_expires_and_can_be_signed_out() -> None:
    clock = Clock(1000.0)
    sessions = Sessions(b"k" * 32, ttl_s=60.0, clock=clock)
    token, session = sessions.issue(Principal("ana", "analyst"))
    assert sessions.read(token) == session and session.user == "ana"
    assert sessions.read(token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]) is None  # tampered
    assert Sessions(b"x" * 32, ttl_s=60.0, clock=clock).read(token) is None  # another key
    assert sessions.read("") is None and sessions.read(None) is None and sessions.read("garbage") is None
    clock.now = 1059.9
    assert sessions.read(token) == session and sessions.valid(session)
    clock.now = 1060.0
    assert sessions.read(token) is None and not sessions.valid(session)
    clock.now = 1000.0
    sessions.revoke(session)
    assert sessions.read(token) is None and not sessions.valid(session)
    other, _ = sessions.issue(Principal("ana", "analyst"))
    assert sessions.read(other) is not None  # signing out ends that session only


def test_the_csrf_token_must_be_echoed_exactly() -> None:
    sessions = Sessions(b"k" * 32, ttl_s=60.0)
    _, session = sessions.issue(Principal("ana", "analyst"))
    _, another = sessions.issue(Principal("ana", "analyst"))
    assert csrf_matches(session, session.csrf)
    assert not csrf_matches(session, None) and not csrf_matches(session, "") and not csrf_matches(session, another.csrf)
