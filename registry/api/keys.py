"""Typed application keys shared by the route modules, and accessors for them."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from registry.db import begin_write
from registry.settings import Settings
from registry.state import BUMPED_VERSION
from registry.throttle import FailureThrottle

SETTINGS = web.AppKey("settings", Settings)
ENGINE = web.AppKey("engine", AsyncEngine)
SESSIONS = web.AppKey("sessions", async_sessionmaker)
OPENAPI = web.AppKey("openapi", dict)
# Callbacks run with the new snapshot version after a committed change (long-poll wake-ups).
SNAPSHOT_LISTENERS = web.AppKey("snapshot_listeners", list)
TOKEN_CACHE = web.AppKey("token_cache", dict)
# Failed sign-ins per client address (bearer tokens here, the console's sign-in form too).
SIGN_IN_THROTTLE = web.AppKey("sign_in_throttle", FailureThrottle)

SnapshotListener = Callable[[int], Any]


def sessions(request: web.Request) -> async_sessionmaker[AsyncSession]:
    """The session factory of the app serving `request`."""
    return request.app[SESSIONS]


def settings(request: web.Request) -> Settings:
    """The settings of the app serving `request`."""
    return request.app[SETTINGS]


def add_snapshot_listener(app: web.Application, listener: SnapshotListener) -> None:
    """Call `listener(version)` after every committed change to the snapshot's content."""
    app[SNAPSHOT_LISTENERS].append(listener)


def notify_snapshot_changed(app: web.Application, version: int) -> None:
    """Tell the listeners that snapshot `version` is committed (called after the commit)."""
    for listener in app[SNAPSHOT_LISTENERS]:
        listener(version)


@contextlib.asynccontextmanager
async def transaction(request: web.Request) -> AsyncIterator[AsyncSession]:
    """One session and transaction for a write; commits at the end, rolls back on error.

    When the transaction bumped the snapshot version, snapshot listeners are told after the
    commit (never before: a woken proxy must be able to read the new version).
    """
    async with request.app[SESSIONS]() as session:
        async with session.begin():
            await begin_write(session)
            yield session
        version = session.info.pop(BUMPED_VERSION, None)
    if version is not None:
        notify_snapshot_changed(request.app, version)
