"""Registry fixtures: a throwaway migrated database per test module (SQLite, and PostgreSQL
when 127.0.0.1:5432 answers), tokens for every role, and the real app on loopback.

Typical use:

    async def test_x(client, auth):
        resp = await client.get("/v1/recipients", headers=auth("engineer"))

Tests share their module's database, so each test picks its own ids (`unique`).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Iterator

import asyncpg
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from registry import db
from registry.api.app import create_app
from registry.api.server import RegistryRunner
from registry.settings import Settings
from registry.tokens import create_token

PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"

# Token names double as audit actors; two per reviewing role for four-eyes tests.
TOKEN_NAMES = {
    "engineer": "eng-alice",
    "engineer2": "eng-bob",
    "security": "sec-carol",
    "security2": "sec-dave",
    "proxy": "proxy-sidecar",
    "admin": "admin-erin",
}


def postgres_reachable() -> bool:
    """True when a PostgreSQL server listens on 127.0.0.1:5432."""
    with contextlib.suppress(OSError), socket.create_connection((PG_HOST, PG_PORT), timeout=0.5):
        return True
    return False


async def _pg_admin(sql: str) -> None:
    conn = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, database="postgres")
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextlib.contextmanager
def throwaway_database(kind: str, tmp_dir) -> Iterator[str]:
    """A fresh, migrated database URL of `kind` ("sqlite" or "postgresql"), dropped afterwards."""
    if kind == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_dir / 'registry.sqlite'}"
        asyncio.run(db.run_migrations(url))
        yield url
        return
    name = f"sharewall_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    try:
        url = f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
        asyncio.run(db.run_migrations(url))
        yield url
    finally:
        asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


DB_KINDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
]


@pytest.fixture(scope="module", params=DB_KINDS)
def db_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A migrated throwaway database for this test module, on SQLite then PostgreSQL."""
    if request.param == "postgresql" and not postgres_reachable():
        pytest.skip("PostgreSQL is not reachable at 127.0.0.1:5432")
    with throwaway_database(request.param, tmp_path_factory.mktemp("registry-db")) as url:
        yield url


async def _create_tokens(url: str) -> dict[str, str]:
    engine = db.create_engine(url)
    try:
        async with db.create_sessionmaker(engine)() as session:
            secrets = {}
            for key, name in TOKEN_NAMES.items():
                role = key.rstrip("2")
                _, secrets[key] = await create_token(session, name=name, role=role)
            await session.commit()
        return secrets
    finally:
        await engine.dispose()


@pytest.fixture(scope="module")
def tokens(db_url: str) -> dict[str, str]:
    """Bearer secrets by role key: engineer, engineer2, security, security2, proxy, admin."""
    return asyncio.run(_create_tokens(db_url))


@pytest.fixture
def auth(tokens: dict[str, str]) -> Callable[[str], dict[str, str]]:
    """`auth("security")` → the Authorization header of that role's token."""
    return lambda key: {"Authorization": f"Bearer {tokens[key]}"}


@pytest.fixture
def settings(db_url: str) -> Settings:
    """Settings of the app under test (override with `dataclasses.replace` in a test module)."""
    return Settings(db_url=db_url, token_cache_ttl_s=0.0)


class RegistryTestServer(TestServer):
    """aiohttp's test server with the registry's own runner (`sharewall registry serve`'s)."""

    async def _make_runner(self, **kwargs):
        return RegistryRunner(self.app, **kwargs)


@pytest_asyncio.fixture
async def client(settings: Settings) -> AsyncIterator[TestClient]:
    """The real registry app served on 127.0.0.1 (ephemeral port) and a client for it."""
    server = RegistryTestServer(create_app(settings), host="127.0.0.1", port=0)
    async with TestClient(server) as test_client:
        yield test_client


@pytest_asyncio.fixture
async def sessions(db_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Direct database sessions (to set up rows or check what the API stored)."""
    engine = db.create_engine(db_url)
    try:
        yield db.create_sessionmaker(engine)
    finally:
        await engine.dispose()


@pytest.fixture
def unique() -> Callable[[str], str]:
    """`unique("twilio")` → a slug no other test of the module uses."""
    return lambda prefix: f"{prefix}-{uuid.uuid4().hex[:8]}"
