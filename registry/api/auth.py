"""Bearer-token authentication and role checks."""

from __future__ import annotations

import asyncio
import ipaddress
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
import structlog
from aiohttp import web
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import select

from registry.audit import Actor
from registry.db import begin_write
from registry.errors import ApiError
from registry.models import ROLES, ApiToken, as_utc, utcnow
from registry.tokens import hash_token, is_live
from sharewall.token_expiry import TOKEN_EXPIRES_HEADER, format_expiry

from . import keys, sessions

log = structlog.get_logger("registry.auth")

# last_used_at is a write; at most one per token per interval keeps reads read-only.
_LAST_USED_EVERY = timedelta(minutes=1)
# A rotated token's old secret in use is logged at most once per token per interval: a
# sidecar calls every second or so, and one line a minute says as much.
_DEPRECATED_LOG_EVERY_S = 60.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Principal:
    """The caller: a token's id, name and role, and its owner (the person: the audit actor);
    `shipper_id` is the identity what it ships is stored under (`ApiToken.shipper_id`);
    `expires_at` is when the token stops authenticating (a rotated token's old secret)."""

    token_id: int
    name: str
    role: str
    owner: str = ""
    shipper_id: int = 0
    expires_at: datetime | None = None

    def actor(self) -> Actor:
        """The caller as the service layer records it (person, role, token name)."""
        return Actor(name=self.owner or self.name, role=self.role, token=self.name)


PRINCIPAL = web.RequestKey("principal", Principal)


def unauthorized(detail: str) -> ApiError:
    return ApiError(
        401,
        "unauthorized",
        "Unauthorized",
        detail,
        headers={"WWW-Authenticate": 'Bearer realm="sharewall"'},
    )


def current_principal(request: web.Request) -> Principal | None:
    """The authenticated caller of `request`, or None."""
    return request.get(PRINCIPAL)


def require_role(request: web.Request, *roles: str) -> Principal:
    """Return the caller when their role is one of `roles`; else raise 401 (no token) or 403."""
    unknown = set(roles) - set(ROLES)
    if unknown:  # a typo here would silently lock everyone out
        raise ValueError(f"unknown roles {sorted(unknown)}")
    principal = current_principal(request)
    if principal is None:
        raise unauthorized("a bearer token is required")
    if principal.role not in roles:
        raise ApiError(
            403,
            "forbidden-role",
            "Forbidden",
            f"role {principal.role!r} may not do this; needs one of {sorted(roles)}",
        )
    return principal


def client_address(request: web.Request) -> str:
    """The client sign-in failures are counted against: the TCP peer's address, or its /64.

    Never `X-Forwarded-For`: the registry has no list of proxies it trusts, and a header
    anyone can set would let a guesser pick a fresh bucket per attempt. An IPv6 peer counts
    by its /64 (a host has at least that many addresses to rotate through); an IPv4 peer of
    a dual-stack socket (`::ffff:a.b.c.d`) by its IPv4 address.
    """
    remote = request.remote or "unknown"
    try:
        address = ipaddress.ip_address(remote.split("%", 1)[0])
    except ValueError:
        return remote
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class LiveTokenHashes:
    """The hashes of every unrevoked token, read from the database at most every `max_age_s`.

    Consulted only for a throttled address: there a valid token is let through and anything
    else is refused without a lookup of its own, so a flood of guesses costs one query per
    interval (not one per guess) and every guess is answered after the same set lookup.
    Creating or revoking a token through the API marks the set stale.
    """

    def __init__(self, max_age_s: float) -> None:
        self._max_age_s = max_age_s
        self._hashes: frozenset[str] = frozenset()
        self._loaded_at = -math.inf
        self._lock = asyncio.Lock()

    def mark_stale(self) -> None:
        self._loaded_at = -math.inf

    def _is_fresh(self) -> bool:
        return time.monotonic() - self._loaded_at <= self._max_age_s

    async def holds(self, app: web.Application, token_hash: str) -> bool:
        """Whether `token_hash` is a live token's (as of at most `max_age_s` ago)."""
        if not self._is_fresh():
            async with self._lock:
                if not self._is_fresh():  # another waiter may have loaded it meanwhile
                    started = time.monotonic()
                    async with app[keys.SESSIONS]() as session:
                        rows = await session.exec(
                            select(ApiToken.token_hash).where(is_live(utcnow()))
                        )
                        self._hashes = frozenset(rows.all())
                    self._loaded_at = started
        return token_hash in self._hashes


LIVE_TOKENS = web.AppKey("live_token_hashes", LiveTokenHashes)


def _throttled(request: web.Request) -> ApiError:
    wait = request.app[keys.SIGN_IN_THROTTLE].retry_after(client_address(request))
    if wait is None:
        raise RuntimeError("_throttled() on an address that is not throttled")
    log.info("auth.throttled", retry_after=wait)
    return ApiError(
        429,
        "too-many-sign-in-failures",
        "Too many failed sign-ins",
        f"too many failed sign-ins from this address; retry after {wait} s",
        headers={"Retry-After": str(wait)},
    )


async def sign_in(request: web.Request, secret: str) -> Principal | None:
    """The principal of a bearer secret (a header's, the console's form's), or None (counted).

    Failed sign-ins are throttled per client address. A valid token passes whatever the
    throttle says: someone guessing behind the same NAT or ingress address as the proxies
    must not lock them out. While the address is throttled any other secret raises 429 with
    `Retry-After` after a set lookup only (`LiveTokenHashes`), never a database query of its
    own, and is not counted again. A right guess is answered as such; the secrets are 256
    random bits, so what the throttle buys is keeping guessing off the database.
    """
    throttle = request.app[keys.SIGN_IN_THROTTLE]
    address = client_address(request)
    token_hash = hash_token(secret) if secret else ""
    if throttle.retry_after(address) is not None:
        if not secret or not await request.app[LIVE_TOKENS].holds(request.app, token_hash):
            raise _throttled(request)
        principal = await _lookup(request.app, token_hash)
        if principal is None:  # revoked since the set was read
            raise _throttled(request)
        return principal
    principal = await _lookup(request.app, token_hash) if secret else None
    if principal is None:
        throttle.failed(address)
    return principal


def forget_token(app: web.Application, token_hash: str | None = None) -> None:
    """Drop cached lookups (one token, or all) so a revocation takes effect at once."""
    tokens_changed(app)
    cache = app[keys.TOKEN_CACHE]
    if token_hash is None:
        cache.clear()
    else:
        cache.pop(token_hash, None)


def tokens_changed(app: web.Application) -> None:
    """A token was created or revoked: the throttled path reads the live tokens again."""
    app[LIVE_TOKENS].mark_stale()


async def _lookup(app: web.Application, token_hash: str) -> Principal | None:
    ttl = app[keys.SETTINGS].token_cache_ttl_s
    cache = app[keys.TOKEN_CACHE]
    hit = cache.get(token_hash)
    now = time.monotonic()
    # A cached principal past its expiry is looked up again (and found expired): the cache
    # never stretches a rotated token's grace.
    if hit is not None and now - hit[1] < ttl and not _has_expired(hit[0]):
        return hit[0]
    async with app[keys.SESSIONS]() as session:
        token = (
            await session.exec(
                select(ApiToken).where(ApiToken.token_hash == token_hash, is_live(utcnow()))
            )
        ).first()
    if token is None:
        cache.pop(token_hash, None)
        return None
    principal = Principal(
        token_id=token.id,
        name=token.name,
        role=token.role,
        owner=token.owner or token.name,
        shipper_id=token.shipper_id,
        expires_at=as_utc(token.expires_at),
    )
    last_used = as_utc(token.last_used_at)
    if last_used is None or utcnow() - last_used > _LAST_USED_EVERY:
        _mark_used_later(app, token.id)
    cache[token_hash] = (principal, now)
    return principal


def _has_expired(principal: Principal) -> bool:
    return principal.expires_at is not None and principal.expires_at <= utcnow()


# When each rotated token's old secret was last logged in use (monotonic), by token id.
DEPRECATED_USE_LOGGED = web.AppKey("deprecated_use_logged", dict)


def _note_deprecated_secret(request: web.Request, principal: Principal) -> None:
    """Log (at most once a minute per token) that a rotated token's old secret was used."""
    logged = request.app[DEPRECATED_USE_LOGGED]
    now = time.monotonic()
    if now - logged.get(principal.token_id, -math.inf) < _DEPRECATED_LOG_EVERY_S:
        return
    logged[principal.token_id] = now
    assert principal.expires_at is not None
    log.warning(
        "token.deprecated_secret_used",
        token_id=principal.token_id,
        expires_at=principal.expires_at.isoformat(),
        path=request.path,
    )


async def announce_expiry(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """on_response_prepare: an answer to an expiring token's request says when it expires."""
    principal = request.get(PRINCIPAL)
    if principal is not None and principal.expires_at is not None:
        response.headers[TOKEN_EXPIRES_HEADER] = format_expiry(principal.expires_at)


# Pending last-used writes by token id: at most one each, awaited when the app stops.
LAST_USED_WRITES = web.AppKey("last_used_writes", dict)


def _mark_used_later(app: web.Application, token_id: int) -> None:
    """Record a token's use in the background: a request never waits for this write (on
    SQLite it could wait the whole busy timeout behind another caller's long write)."""
    pending = app[LAST_USED_WRITES]
    if token_id in pending:
        return
    task = asyncio.get_running_loop().create_task(_mark_used(app, token_id))
    pending[token_id] = task
    task.add_done_callback(lambda _: pending.pop(token_id, None))


async def finish_last_used_writes(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx (after the database's): pending last-used writes end before it closes."""
    app[LAST_USED_WRITES] = {}
    yield
    pending = list(app[LAST_USED_WRITES].values())
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)


async def _mark_used(app: web.Application, token_id: int) -> None:
    # Bookkeeping only, in the background: a failure is logged, never an error for anyone.
    try:
        async with app[keys.SESSIONS]() as session, session.begin():
            await begin_write(session)
            await session.exec(
                sa.update(ApiToken).where(ApiToken.id == token_id).values(last_used_at=utcnow())
            )
    except (SQLAlchemyError, OSError) as exc:
        log.warning("auth.last_used_not_recorded", token_id=token_id, error=type(exc).__name__)


async def _session_principal(request: web.Request) -> Principal | None:
    """The principal of the console session in the request's cookie, if any and still valid.

    The token is looked up again (cached briefly), so revoking it ends its sessions too. A
    proxy token never has a session. A cookie-authenticated API write needs the CSRF token.
    """
    session_id = request.cookies.get(sessions.COOKIE)
    store = request.app.get(sessions.SESSION_STORE)
    if not session_id or store is None:
        return None
    session = store.get(session_id)
    if session is None:
        return None
    principal = await _lookup(request.app, session.token_hash)
    if principal is None or principal.role == "proxy":
        store.drop(session_id)
        return None
    request[sessions.CONSOLE_SESSION] = session
    if (
        request.method not in sessions.SAFE_METHODS
        and not request.path.startswith("/ui/")  # console forms check their own field
        and not session.csrf_matches(request.headers.get(sessions.CSRF_HEADER))
    ):
        raise ApiError(
            403,
            "csrf",
            "Forbidden",
            f"a write from a console session needs its CSRF token in {sessions.CSRF_HEADER}",
        )
    return principal


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Resolve `Authorization: Bearer …` (or a console session) to a `Principal`.

    A bad token is 401 at once; a stale session cookie is simply no principal.
    """
    header = request.headers.get("Authorization")
    if header is None:
        principal = await _session_principal(request)
        if principal is not None:
            _authenticated(request, principal)
    if header is not None:
        scheme, _, secret = header.partition(" ")
        if scheme.lower() != "bearer":
            secret = ""  # malformed: a failed sign-in like a wrong token
        principal = await sign_in(request, secret.strip())
        if principal is None:
            log.info("auth.rejected", path=request.path)
            if not secret.strip():
                raise unauthorized("expected 'Authorization: Bearer <token>'")
            raise unauthorized("unknown, revoked or expired token")
        _authenticated(request, principal)
    return await handler(request)


def _authenticated(request: web.Request, principal: Principal) -> None:
    request[PRINCIPAL] = principal
    structlog.contextvars.bind_contextvars(
        actor=principal.owner, token=principal.name, role=principal.role
    )
    if principal.expires_at is not None:
        _note_deprecated_secret(request, principal)
