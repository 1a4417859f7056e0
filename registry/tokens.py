"""API tokens: create (the secret is shown once, only its hash is kept), list, rotate, revoke."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from registry.audit import CLI_ACTOR, Actor, record_audit
from registry.errors import conflict, invalid_field, not_found
from registry.models import ROLES, ApiToken, as_utc, utcnow

TOKEN_PREFIX = "sw_"  # noqa: S105 - a marker for secret scanners, not a secret

# How long a rotated token's old secret keeps authenticating unless the caller says otherwise:
# long enough for a rollout to hand every sidecar the new secret (an environment variable
# is read at start), short enough that an old secret does not outlive the day. A suspected
# leak is rotated with a grace of 0 (or the token revoked).
DEFAULT_GRACE_S = 3600
MAX_GRACE_S = 7 * 24 * 3600


def is_live(now: datetime) -> sa.ColumnElement[bool]:
    """The SQL condition of a token that authenticates at `now`: not revoked, not expired."""
    return sa.and_(
        ApiToken.revoked_at.is_(None),
        sa.or_(ApiToken.expires_at.is_(None), ApiToken.expires_at > now),
    )


def new_token_secret() -> str:
    """A fresh bearer secret (256 bits, URL-safe)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(secret: str) -> str:
    """The stored form of a secret: SHA-256 hex (secrets are random, so no salt is needed)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def token_view(token: ApiToken) -> dict[str, Any]:
    """A token as the API and CLI show it (never the hash)."""
    return {
        "id": token.id,
        "name": token.name,
        "owner": token.owner,
        "role": token.role,
        "shipper_id": token.shipper_id,
        "created_at": as_utc(token.created_at),
        "last_used_at": as_utc(token.last_used_at),
        "revoked_at": as_utc(token.revoked_at),
        "expires_at": as_utc(token.expires_at),
    }


async def create_token(
    session: AsyncSession,
    *,
    name: str,
    role: str,
    owner: str | None = None,
    actor: Actor = CLI_ACTOR,
) -> tuple[ApiToken, str]:
    """Create a token held by `owner` (a person; default: the token's name).

    Returns the token with its secret (the only time the secret exists in clear). Four eyes
    compare owners, so give each person one owner name for all their tokens.
    """
    if role not in ROLES:
        raise invalid_field("role", f"unknown role {role!r}; one of {list(ROLES)}")
    name = name.strip()
    if not name or len(name) > 200:
        raise invalid_field("name", "must be 1-200 characters")
    owner = (owner if owner is not None else name).strip()
    if not owner or len(owner) > 200:
        raise invalid_field("owner", "must be 1-200 characters")
    secret = new_token_secret()
    token = ApiToken(
        name=name, owner=owner, role=role, token_hash=hash_token(secret), created_at=utcnow()
    )
    session.add(token)
    await session.flush()
    record_audit(
        session,
        actor,
        "token.create",
        "token",
        str(token.id),
        after={"name": name, "owner": owner, "role": role},
    )
    return token, secret


async def rotate_token(
    session: AsyncSession,
    token_id: int,
    *,
    grace_seconds: int = DEFAULT_GRACE_S,
    actor: Actor = CLI_ACTOR,
) -> tuple[ApiToken, ApiToken, str]:
    """Replace a live token by a new secret of the same name, owner, role and lineage; returns
    the old token, the new one and its secret.

    The old secret keeps authenticating, as the same identity and role, for `grace_seconds`
    (0 to MAX_GRACE_S; 0 ends it at once), so sidecars are not refused while they are handed
    the new one; its `expires_at` says until when. What the new token ships is stored under
    the lineage's identity (`ApiToken.shipper_id`), so a proxy re-sending a minute after the
    rotation counts it once. A token already rotated (it has an expiry) is refused: rotate
    its successor. The caller drops any cached lookup of the old one.
    """
    if isinstance(grace_seconds, bool) or not 0 <= grace_seconds <= MAX_GRACE_S:
        raise invalid_field("grace_seconds", f"must be 0 to {MAX_GRACE_S} seconds")
    old = await session.get(ApiToken, token_id, with_for_update=True)
    if old is None:
        raise not_found("token", token_id)
    now = utcnow()
    if old.revoked_at is not None:
        raise conflict(f"token {token_id} is revoked; only a live token can be rotated")
    if old.expires_at is not None:
        raise conflict(
            f"token {token_id} was rotated already (its secret expires at "
            f"{as_utc(old.expires_at).isoformat()}); rotate its successor"
        )
    secret = new_token_secret()
    token = ApiToken(
        name=old.name,
        owner=old.owner,
        role=old.role,
        token_hash=hash_token(secret),
        lineage_id=old.shipper_id,
        created_at=now,
    )
    old.expires_at = now + timedelta(seconds=grace_seconds)
    if grace_seconds == 0:
        old.revoked_at = now
    session.add_all([old, token])
    await session.flush()
    record_audit(
        session,
        actor,
        "token.rotate",
        "token",
        str(old.id),
        before={"id": old.id, "revoked": False},
        after={
            "id": token.id,
            "rotated_id": old.id,
            "rotated_expires_at": old.expires_at.isoformat(),
            "grace_seconds": grace_seconds,
            "shipper_id": token.shipper_id,
        },
    )
    return old, token, secret


async def list_tokens(session: AsyncSession) -> list[ApiToken]:
    """Every token, oldest first (revoked and expired ones too)."""
    return list((await session.exec(select(ApiToken).order_by(ApiToken.id))).all())


async def revoke_token(
    session: AsyncSession, token_id: int, *, actor: Actor = CLI_ACTOR
) -> ApiToken:
    """Revoke a token (idempotent; a rotated token's grace ends at once); returns it. The
    caller drops any cached lookup."""
    token = await session.get(ApiToken, token_id)
    if token is None:
        raise not_found("token", token_id)
    if token.revoked_at is None:
        before = {"name": token.name, "owner": token.owner, "role": token.role, "revoked": False}
        token.revoked_at = utcnow()
        session.add(token)
        record_audit(
            session,
            actor,
            "token.revoke",
            "token",
            str(token.id),
            before=before,
            after={**before, "revoked": True},
        )
    return token


async def token_names(conn: AsyncConnection, ids: set[int]) -> dict[int, str]:
    """The names of the tokens `ids` (the shippers of flows and ledger rows), by id."""
    if not ids:
        return {}
    table = ApiToken.__table__
    found = await conn.execute(sa.select(table.c.id, table.c.name).where(table.c.id.in_(ids)))
    return {token_id: name for token_id, name in found.all()}
