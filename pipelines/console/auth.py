"""Who may use the console: password hashes, signed sessions that expire, CSRF tokens and roles.

Pure: no web framework, the clock is an argument. Passwords are kept only as
scrypt hashes (``scrypt$N$r$p$salt$hash``), compared in constant time:

>>> encoded = hash_password("correct horse", n=2**10)
>>> encoded.startswith("scrypt$1024$8$1$"), verify_password("correct horse", encoded), verify_password("wrong", encoded)
(True, True, False)
>>> verify_password("anything", "not-a-hash")
False

A session is a signed token naming the user, a CSRF token and when it was issued;
the user's role is looked up in the configuration on every request, never read from the token:

>>> from configs import ConsoleUser
>>> users = Directory({"ana": ConsoleUser(password_hash=encoded, role="analyst")})
>>> sessions = Sessions(b"k" * 32, ttl_s=60.0, clock=lambda: 1000.0)
>>> token, session = sessions.issue(users.authenticate("ana", "correct horse"))
>>> sessions.read(token) == session, users.principal(session.user).may_give_verdicts
(True, True)
>>> Sessions(b"k" * 32, ttl_s=60.0, clock=lambda: 1061.0).read(token) is None  # expired
True
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from itsdangerous import BadSignature, URLSafeSerializer

from configs import ConsoleUser
from configs.settings import PASSWORD_HASH

#: scrypt cost (2**14, 8, 1: about 16 MiB and 50 ms a check, the parameters Python's docs suggest).
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
#: The user every request is when the console runs without ``console.users`` (loopback only).
LOCAL_USER = "local"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii")


def hash_password(password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P,
                  salt: bytes | None = None) -> str:  # fmt: skip
    """``scrypt$N$r$p$salt$hash`` of ``password`` with a random 16-byte salt (what ``console.users`` holds)."""
    if not password:
        raise ValueError("the password is empty")
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=256 * n * r + 2**20, dklen=32)
    return f"scrypt${n}${r}${p}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, encoded: str) -> bool:
    """True when ``password`` hashes to ``encoded``; False for a malformed hash (never raises)."""
    if not PASSWORD_HASH.match(encoded):
        return False
    _, n, r, p, salt, expected = encoded.split("$")
    try:
        want = base64.urlsafe_b64decode(expected)
        digest = hashlib.scrypt(password.encode("utf-8"), salt=base64.urlsafe_b64decode(salt), n=int(n), r=int(r),
                                p=int(p), maxmem=256 * int(n) * int(r) + 2**20, dklen=len(want))  # fmt: skip
    except (ValueError, MemoryError):  # n not a power of 2, parameters beyond the memory bound
        return False
    return hmac.compare_digest(digest, want)


@dataclass(frozen=True)
class Principal:
    """A signed-in user and their role (from the configuration)."""

    name: str
    role: str

    @property
    def may_give_verdicts(self) -> bool:
        """Only analysts write (verdicts); viewers see."""
        return self.role == "analyst"


class Directory:
    """The users of ``console.users``; without any, everyone is :data:`LOCAL_USER`, an analyst (loopback only)."""

    def __init__(self, users: Mapping[str, ConsoleUser]) -> None:
        self.users = dict(users)
        # checked against when the user is unknown, so that an unknown name costs as long as a wrong password
        self._decoy = hash_password(secrets.token_urlsafe(16)) if users else ""

    @property
    def open(self) -> bool:
        """No users configured: no sign-in."""
        return not self.users

    def authenticate(self, name: str, password: str) -> Principal | None:
        """The user when the password is theirs, else None (the same work either way)."""
        user = self.users.get(name)
        matches = verify_password(password, user.password_hash if user is not None else self._decoy)
        return Principal(name, user.role) if user is not None and matches else None

    def principal(self, name: str) -> Principal | None:
        """The user's current role, None when they are no longer configured."""
        if self.open:
            return Principal(LOCAL_USER, "analyst") if name == LOCAL_USER else None
        user = self.users.get(name)
        return None if user is None else Principal(name, user.role)


@dataclass(frozen=True)
class Session:
    """What a session token carries: the user, the CSRF token every write must echo, when it was issued."""

    user: str
    csrf: str
    session_id: str
    issued_at: float


class Sessions:
    """Signed session tokens (itsdangerous) that expire ``ttl_s`` after sign-in and can be revoked (sign-out)."""

    def __init__(self, secret: bytes, ttl_s: float, clock: Callable[[], float] = time.time) -> None:
        self.serializer = URLSafeSerializer(secret, salt="fraudstream-console-session")
        self.ttl_s, self.clock = ttl_s, clock
        #: Signed-out sessions until they would have expired anyway.
        self.revoked: dict[str, float] = {}

    def issue(self, principal: Principal | None) -> tuple[str, Session]:
        """A new session for ``principal``, and its token (the cookie value)."""
        if principal is None:
            raise ValueError("no principal to issue a session for")
        session = Session(principal.name, secrets.token_urlsafe(32), secrets.token_urlsafe(16), self.clock())
        token = self.serializer.dumps([session.user, session.csrf, session.session_id, session.issued_at])
        return str(token), session

    def read(self, token: str | None) -> Session | None:
        """The session of a token: None when it is missing, forged, expired or signed out."""
        if not token:
            return None
        try:
            user, csrf, session_id, issued_at = self.serializer.loads(token)
        except (BadSignature, ValueError, TypeError):
            return None
        if not isinstance(issued_at, int | float) or not self.clock() - issued_at < self.ttl_s:
            return None
        if session_id in self.revoked:
            return None
        return Session(str(user), str(csrf), str(session_id), float(issued_at))

    def valid(self, session: Session) -> bool:
        """True while ``session`` has neither expired nor been signed out (a long-lived event stream asks)."""
        return self.clock() - session.issued_at < self.ttl_s and session.session_id not in self.revoked

    def expires_at(self, session: Session) -> float:
        return session.issued_at + self.ttl_s

    def revoke(self, session: Session) -> None:
        """Sign out: the token stops working now, not when it expires."""
        now = self.clock()
        self.revoked = {sid: until for sid, until in self.revoked.items() if until > now}
        self.revoked[session.session_id] = self.expires_at(session)


def csrf_matches(session: Session, sent: str | None) -> bool:
    """True when the request echoes its session's CSRF token (compared in constant time)."""
    return sent is not None and hmac.compare_digest(session.csrf.encode(), sent.encode())


class SignInThrottle:
    """Refuses sign-in for a user name after ``max_failures`` wrong passwords within ``window_s`` (until the
    oldest of them is ``window_s`` old), so a password cannot be guessed at the server's speed.

    >>> clock = [0.0]
    >>> throttle = SignInThrottle(max_failures=2, window_s=60.0, clock=lambda: clock[0])
    >>> throttle.failed("ana"); throttle.wait_s("ana")
    0.0
    >>> throttle.failed("ana"); throttle.wait_s("ana"), throttle.wait_s("bo")
    (60.0, 0.0)
    >>> clock[0] = 61.0; throttle.wait_s("ana")
    0.0
    """

    def __init__(self, max_failures: int = 5, window_s: float = 300.0, clock: Callable[[], float] = time.time) -> None:
        self.max_failures, self.window_s, self.clock = max_failures, window_s, clock
        self.failures: dict[str, list[float]] = {}

    def _recent(self, name: str) -> list[float]:
        since = self.clock() - self.window_s
        recent = [t for t in self.failures.get(name, ()) if t > since]
        if recent:
            self.failures[name] = recent
        else:
            self.failures.pop(name, None)
        return recent

    def wait_s(self, name: str) -> float:
        """Seconds until ``name`` may try again (0: now)."""
        recent = self._recent(name)
        if len(recent) < self.max_failures:
            return 0.0
        return round(recent[-self.max_failures] + self.window_s - self.clock(), 1)

    def failed(self, name: str) -> None:
        self.failures.setdefault(name, []).append(self.clock())
        if len(self.failures) > 10_000:  # bounded: forget the names whose failures are all old
            for other in list(self.failures):
                self._recent(other)

    def succeeded(self, name: str) -> None:
        self.failures.pop(name, None)
