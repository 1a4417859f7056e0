"""The registry state row: the snapshot version every enforcement point follows."""

from __future__ import annotations

import sqlalchemy as sa
from sqlmodel.ext.asyncio.session import AsyncSession

from registry.models import RegistryState, utcnow

# `session.info` key holding the version this session's transaction bumped to, so whoever
# commits can wake long-polling clients afterwards (see `registry.api.keys.transaction`).
BUMPED_VERSION = "sharewall.snapshot_version"


async def current_version(session: AsyncSession) -> int:
    """The committed snapshot version (0 for an empty registry)."""
    result = await session.exec(sa.select(RegistryState.version).where(RegistryState.id == 1))
    return int(result.scalar_one_or_none() or 0)


async def bump_snapshot_version(session: AsyncSession) -> int:
    """Increase the snapshot version inside the caller's transaction and return the new one.

    An UPDATE … SET version = version + 1 takes the row lock (PostgreSQL) / write lock (SQLite),
    so two concurrent writers get two different versions, in commit order.
    """
    result = await session.exec(
        sa.update(RegistryState)
        .where(RegistryState.id == 1)
        .values(version=RegistryState.version + 1, updated_at=utcnow())
        .returning(RegistryState.version)
    )
    version = int(result.scalar_one())
    session.info[BUMPED_VERSION] = version
    return version
