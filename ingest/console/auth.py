"""Who may use the console: operator accounts from the config, sessions, CSRF, login limits.

Accounts live in ``console.users`` (argon2 or bcrypt hashes, or a plain
secret from ``${ENV}``/``file:``); nothing about them is stored. Sessions are
kept in this process's memory, keyed by a random token in an HttpOnly,
SameSite=Strict cookie scoped to ``/console`` — one API per host, so no other
process needs them, and a restart logs everyone out, which is the safe
direction. Each session carries its own CSRF token, checked on every POST.
The account is looked up in the configuration in force on every request, so
a reload that removes a user or changes a role takes effect at once.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import deque
from dataclasses import dataclass, field

import argon2
import bcrypt

from policy.config.model import ConsoleConfig, ConsoleUser

COOKIE = "firstline_console"
LOGIN_COOKIE = "firstline_console_login"
_hasher = argon2.PasswordHasher()
# Verified when the user name is unknown, so the answer takes as long as for a known one.
_DUMMY = _hasher.hash(secrets.token_hex(16))


def hash_password(password: str) -> str:
    """An argon2id hash for ``console.users[].password`` (``firstline console-password``)."""
    return _hasher.hash(password)


def password_matches(stored: str, offered: str) -> bool:
    if stored.startswith("$argon2"):
        try:
            return _hasher.verify(stored, offered)
        except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
            return False
    if stored.startswith(("$2a$", "$2b$", "$2y$")):
        try:
            return bcrypt.checkpw(offered.encode("utf-8"), stored.encode("ascii"))
        except ValueError:
            return False
    # A plain secret from ${ENV} or file: (the config refuses plain text in the file).
    return hmac.compare_digest(stored.encode("utf-8"), offered.encode("utf-8"))


def authenticate(config: ConsoleConfig, name: str, password: str) -> ConsoleUser | None:
    user = find_user(config, name)
    if user is None:
        password_matches(_DUMMY, password)
        return None
    return user if password_matches(user.password.get_secret_value(), password) else None


def find_user(config: ConsoleConfig, name: str) -> ConsoleUser | None:
    wanted = name.strip().lower()
    return next((u for u in config.users if u.name.lower() == wanted), None)


@dataclass
class ConsoleSession:
    user: str
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    last_seen: float = field(default_factory=time.monotonic)


class Sessions:
    """Session tokens → sessions, ended by logout or after ``idle`` seconds unused."""

    MAX = 10_000

    def __init__(self) -> None:
        self._sessions: dict[str, ConsoleSession] = {}

    def create(self, user: str) -> tuple[str, ConsoleSession]:
        if len(self._sessions) >= self.MAX:  # never grows without bound
            oldest = min(self._sessions, key=lambda t: self._sessions[t].last_seen)
            del self._sessions[oldest]
        token = secrets.token_urlsafe(32)
        session = ConsoleSession(user)
        self._sessions[token] = session
        return token, session

    def get(self, token: str | None, idle: float) -> ConsoleSession | None:
        if not token:
            return None
        session = self._sessions.get(token)
        if session is None:
            return None
        now = time.monotonic()
        if now - session.last_seen > idle:
            del self._sessions[token]
            return None
        session.last_seen = now
        return session

    def end(self, token: str | None) -> None:
        if token:
            self._sessions.pop(token, None)


class LoginLimiter:
    """At most ``attempts`` failed logins per window, per client address and per user name."""

    def __init__(self) -> None:
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, key: str, window: float, now: float) -> deque[float]:
        failures = self._failures.setdefault(key, deque())
        while failures and now - failures[0] > window:
            failures.popleft()
        return failures

    def wait(self, keys: list[str], attempts: int, window: float) -> float:
        """Seconds until another attempt is allowed (0: allowed now)."""
        now = time.monotonic()
        longest = 0.0
        for key in keys:
            failures = self._recent(key, window, now)
            if len(failures) >= attempts:
                longest = max(longest, window - (now - failures[0]))
        return longest

    def failed(self, keys: list[str], attempts: int) -> None:
        now = time.monotonic()
        for key in keys:
            failures = self._failures.setdefault(key, deque())
            failures.append(now)
            while len(failures) > attempts:
                failures.popleft()
        if len(self._failures) > 100_000:  # a flood of addresses: forget the oldest half
            for key in list(self._failures)[:50_000]:
                del self._failures[key]

    def succeeded(self, user_key: str) -> None:
        self._failures.pop(user_key, None)


def same_token(expected: str, offered: str | None) -> bool:
    return offered is not None and hmac.compare_digest(expected.encode(), offered.encode())
