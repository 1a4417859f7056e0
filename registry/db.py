"""Database access: the async engine, sessions, and Alembic migrations run from code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

DEFAULT_DB_URL = "sqlite+aiosqlite:///./var/registry.sqlite"

_SQLITE_BUSY_TIMEOUT_MS = 5000
# PostgreSQL's counterpart of the busy timeout: how long a statement waits for a lock (the
# writers' registry_state row, a row another session holds) before it fails with
# lock_not_available (55P03, answered 503 database-busy with Retry-After). Without it one
# stuck writer (an operator's open psql transaction) made every write wait forever.
DEFAULT_LOCK_TIMEOUT_S = 5.0


class DatabaseUrlError(ValueError):
    """A database URL the registry cannot use (unparseable, or an unsupported database)."""


def normalise_url(url: str | sa.URL) -> sa.URL:
    """The async driver URL of `url`: `postgresql://` (any driver) → asyncpg, `sqlite://` →
    aiosqlite; any other database is a `DatabaseUrlError`."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise DatabaseUrlError(
            "not a database URL; expected sqlite+aiosqlite:///PATH or postgresql://USER@HOST/DB"
        ) from None
    backend = parsed.get_backend_name()
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+asyncpg")
    if backend == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite")
    raise DatabaseUrlError(
        f"unsupported database {backend!r}; use sqlite+aiosqlite:///PATH (embedded) or "
        "postgresql://USER@HOST/DB"
    )


def is_sqlite(url: str | sa.URL) -> bool:
    """True when the URL names a SQLite database."""
    return normalise_url(url).get_backend_name() == "sqlite"


def _ensure_sqlite_dir(url: sa.URL) -> None:
    database = url.database
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)


# Execution option naming a transaction that will write: on SQLite it starts with
# BEGIN IMMEDIATE, taking the write lock before its first read, so a read-modify-write
# (version checks, four eyes) cannot interleave with another writer's and never fails with
# "database is locked" on a lock upgrade. PostgreSQL ignores the option (see begin_write).
WRITE_TRANSACTION = "sharewall_write"

# PostgreSQL's counterpart of BEGIN IMMEDIATE: every write transaction first locks the one
# registry_state row, so writers run one at a time in the order they came, and two of them
# can never hold row locks the other waits for (an apply deleting recipients while an edit
# bumps the snapshot version was a deadlock, one of them aborted with a 503). Readers never
# wait for it (MVCC).
_LOCK_WRITERS = sa.text("SELECT id FROM registry_state WHERE id = 1 FOR UPDATE")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # We emit BEGIN ourselves (see _sqlite_begin); the driver's implicit BEGIN would start
    # transactions only at the first write, leaving reads before it unisolated.
    dbapi_connection.isolation_level = None
    # WAL lets readers (snapshot long-polls) run beside the writer; foreign keys are off by
    # default in SQLite; busy_timeout waits for the write lock instead of failing at once.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={_SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _sqlite_begin(conn: sa.Connection) -> None:
    mode = "IMMEDIATE" if conn.get_execution_options().get(WRITE_TRANSACTION) else "DEFERRED"
    conn.exec_driver_sql(f"BEGIN {mode}")


def create_engine(
    url: str = DEFAULT_DB_URL, *, lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S, **kwargs: Any
) -> AsyncEngine:
    """Create the async engine for `url` (`sqlite+aiosqlite:///…` or `postgresql://…`).

    On PostgreSQL every session waits at most `lock_timeout_s` for a lock (0: forever);
    SQLite's writers wait its fixed busy timeout.
    """
    parsed = normalise_url(url)
    if parsed.get_backend_name() == "sqlite":
        _ensure_sqlite_dir(parsed)
        engine = create_async_engine(parsed, **kwargs)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        event.listen(engine.sync_engine, "begin", _sqlite_begin)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    # Readers take no row locks (MVCC), so in practice this bounds the writers' waits.
    server_settings = {"lock_timeout": str(round(lock_timeout_s * 1000))}
    kwargs.setdefault("connect_args", {}).setdefault("server_settings", server_settings)
    return create_async_engine(parsed, **kwargs)


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded objects usable after commit (handlers render them afterwards)."""
    return async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)


async def begin_write(session: AsyncSession) -> None:
    """Mark the session's transaction as a writer; call it first, before any read.

    Writers then run one at a time: SQLite starts the transaction with BEGIN IMMEDIATE,
    PostgreSQL locks the registry_state row, and a second writer waits for the first to end.
    """
    conn = await session.connection(execution_options={WRITE_TRANSACTION: True})
    if conn.dialect.name != "sqlite":
        await conn.execute(_LOCK_WRITERS)


def alembic_config(url: str | None = None) -> Config:
    """The Alembic configuration, built in code (no alembic.ini needed)."""
    cfg = Config()
    cfg.set_main_option("script_location", "registry:migrations")
    if url is not None:
        # ConfigParser interpolation: a literal '%' in a password must be doubled.
        cfg.set_main_option("sqlalchemy.url", str(url).replace("%", "%%"))
    return cfg


def _run_alembic(sync_connection: sa.Connection, cfg: Config, verb: str, revision: str) -> None:
    cfg.attributes["connection"] = sync_connection
    getattr(command, verb)(cfg, revision)


async def migrate(engine: AsyncEngine, revision: str = "head", *, downgrade: bool = False) -> None:
    """Upgrade (or downgrade) the database behind `engine` to `revision`, in one transaction."""
    cfg = alembic_config()
    verb = "downgrade" if downgrade else "upgrade"
    async with engine.connect() as conn:
        conn = await conn.execution_options(**{WRITE_TRANSACTION: True})
        async with conn.begin():
            if conn.dialect.name == "postgresql":
                # A migration waits for the registry's transactions to end, as it always did.
                await conn.execute(sa.text("SET LOCAL lock_timeout = 0"))
            await conn.run_sync(_run_alembic, cfg, verb, revision)


async def run_migrations(url: str = DEFAULT_DB_URL, revision: str = "head") -> None:
    """Bring the database at `url` to `revision` (the newest by default)."""
    engine = create_engine(url)
    try:
        await migrate(engine, revision)
    finally:
        await engine.dispose()
