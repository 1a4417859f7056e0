"""Console sessions: a server-side session per signed-in browser, found by an opaque cookie.

The browser holds only a random session id (cookie `HttpOnly`, `SameSite=Strict`, `Secure`
behind TLS); the server keeps which token signed in (its hash, so a revoked token ends the
session at once), the session's CSRF token and its times. A cookie-authenticated write must
carry the CSRF token (`X-CSRF-Token`, or the `csrf` form field of a console form).
"""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass, field

from aiohttp import web

COOKIE = "sw_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
IDLE_S = 60 * 60  # an hour without a request ends a session
MAX_AGE_S = 12 * 60 * 60  # and none lives longer than a working day
MAX_SESSIONS = 10_000
MAX_SESSIONS_PER_TOKEN = 20  # a token signing in again and again evicts its own sessions only


@dataclass
class ConsoleSession:
    """One signed-in browser."""

    id: str
    token_hash: str
    csrf: str
    created: float
    last_seen: float = field(default=0.0)

    def csrf_matches(self, value: str | None) -> bool:
        """Constant-time comparison of a submitted CSRF token."""
        return bool(value) and hmac.compare_digest(value.encode(), self.csrf.encode())


class SessionStore:
    """Sessions in memory (one registry process; a restart signs everyone out)."""

    def __init__(self, clock=time.monotonic) -> None:
        self._sessions: dict[str, ConsoleSession] = {}
        self._clock = clock

    def create(self, token_hash: str) -> ConsoleSession:
        now = self._clock()
        self._expire(now)
        own = [s for s in self._sessions.values() if s.token_hash == token_hash]
        if len(own) >= MAX_SESSIONS_PER_TOKEN:  # its own least recently used go first
            own.sort(key=lambda s: s.last_seen)
            for stale in own[: len(own) - MAX_SESSIONS_PER_TOKEN + 1]:
                self._sessions.pop(stale.id, None)
        if len(self._sessions) >= MAX_SESSIONS:  # the oldest go first
            oldest = sorted(self._sessions.values(), key=lambda s: s.last_seen)
            for stale in oldest[: len(oldest) - MAX_SESSIONS + 1]:
                self._sessions.pop(stale.id, None)
        session = ConsoleSession(
            secrets.token_urlsafe(32), token_hash, secrets.token_urlsafe(32), now, now
        )
        self._sessions[session.id] = session
        return session

    def get(self, session_id: str) -> ConsoleSession | None:
        """The live session of an id, touched; None when unknown or expired."""
        session = self._sessions.get(session_id)
        if session is None:
            return None
        now = self._clock()
        if now - session.last_seen > IDLE_S or now - session.created > MAX_AGE_S:
            self._sessions.pop(session_id, None)
            return None
        session.last_seen = now
        return session

    def drop(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)

    def _expire(self, now: float) -> None:
        for sid in [
            s.id
            for s in self._sessions.values()
            if now - s.last_seen > IDLE_S or now - s.created > MAX_AGE_S
        ]:
            self._sessions.pop(sid, None)


SESSION_STORE = web.AppKey("console_sessions", SessionStore)
CONSOLE_SESSION = web.RequestKey("console_session", ConsoleSession)


def is_secure(request: web.Request) -> bool:
    """Whether the browser reached us over TLS (directly, or behind a TLS-terminating proxy)."""
    forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    return request.secure or forwarded == "https"


def set_session_cookie(response: web.StreamResponse, request: web.Request, session_id: str) -> None:
    response.set_cookie(
        COOKIE,
        session_id,
        path="/",
        httponly=True,
        samesite="Strict",
        secure=is_secure(request),
        max_age=MAX_AGE_S,
    )


def clear_session_cookie(response: web.StreamResponse, request: web.Request) -> None:
    response.del_cookie(COOKIE, path="/", samesite="Strict", secure=is_secure(request))
