"""Bodies are read only after authentication and routing, inflated with a cap; aiohttp's own
errors are problem+json; failed sign-ins are throttled per address; ingest is proxy-only."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gzip
import re
import sqlite3
import zlib

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from registry.api.app import create_app
from registry.api.auth import LAST_USED_WRITES
from registry.settings import Settings

from .conftest import RegistryTestServer

PROBLEM = "application/problem+json"
P = "https://sharewall.dev/problems/"


@pytest.fixture
def settings(db_url: str) -> Settings:
    return Settings(db_url=db_url, token_cache_ttl_s=0.0, sign_in_failures=3)


@pytest.fixture(scope="module")
def gzip_bomb() -> bytes:
    """About 256 KiB of gzip that inflates to 256 MiB of zeros."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = bytes(1024 * 1024)
    parts = [packer.compress(block) for _ in range(256)]
    return b"".join(parts) + packer.flush()


GZ = {"Content-Encoding": "gzip", "Content-Type": "application/json"}


@pytest.mark.parametrize(
    ("method", "path", "who", "status"),
    [
        pytest.param("post", "/healthz", None, 405, id="no token, no such route for POST"),
        pytest.param("post", "/no/such/path", None, 404, id="no token, unknown path"),
        pytest.param("post", "/v1/recipients", None, 401, id="no token, known route"),
        pytest.param("post", "/v1/recipients", "proxy", 403, id="wrong role"),
        pytest.param("post", "/v1/recipients", "engineer", 413, id="inflates past the limit"),
        pytest.param("post", "/v1/decisions", "proxy", 413, id="upload inflates past its limit"),
    ],
)
async def test_a_gzip_bomb_is_answered_without_inflating_it(
    client, auth, gzip_bomb, method, path, who, status
):
    headers = {**GZ, **(auth(who) if who else {})}
    resp = await client.request(method, path, data=gzip_bomb, headers=headers)
    assert resp.status == status
    assert resp.content_type == PROBLEM
    # The registry still answers (the event loop was never stuck inflating).
    assert (await client.get("/healthz")).status == 200


@pytest.mark.parametrize(
    ("body", "encoding", "status", "slug"),
    [
        pytest.param(b"this is not gzip", "gzip", 400, "malformed-gzip", id="not gzip"),
        pytest.param(gzip.compress(b'{"id": "x"}')[:-6], "gzip", 400, "malformed-gzip", id="cut"),
        pytest.param(b"\x00\x01\x02garbage", "deflate", 400, "malformed-deflate", id="deflate"),
        pytest.param(b"{}", "br", 415, "unsupported-content-encoding", id="unsupported encoding"),
    ],
)
async def test_malformed_compressed_bodies_are_client_errors(
    client, auth, body, encoding, status, slug
):
    resp = await client.post(
        "/v1/recipients",
        data=body,
        headers={
            **auth("engineer"),
            "Content-Encoding": encoding,
            "Content-Type": "application/json",
        },
    )
    assert resp.status == status
    assert (await resp.json())["type"] == P + slug


async def test_a_gzip_body_within_the_limit_is_read(client, auth, unique):
    rid = unique("gz")
    body = gzip.compress(f'{{"id": "{rid}", "name": "G", "kind": "vendor"}}'.encode())
    resp = await client.post("/v1/recipients", data=body, headers={**auth("engineer"), **GZ})
    assert resp.status == 201, await resp.text()


async def _raw_exchange(client, request: bytes) -> tuple[int, bytes, bytes]:
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(request)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, head.lower(), body


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(b"GARBAGE\r\n\r\n", id="bad request line"),
        pytest.param(
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 20000 + b"\r\n\r\n",
            id="huge header",
        ),
        pytest.param(
            b"POST /v1/recipients HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            id="bad chunk",
        ),
    ],
)
async def test_aiohttp_low_level_errors_are_problem_json(client, request_bytes):
    status, head, body = await _raw_exchange(client, request_bytes)
    assert 400 <= status < 500
    assert b"content-type: application/problem+json" in head
    assert b'"type":"https://sharewall.dev/problems/' in body


async def test_unknown_paths_and_methods_are_problem_json(client):
    resp = await client.get("/no/such/path")
    assert (resp.status, resp.content_type) == (404, PROBLEM)
    resp = await client.delete("/healthz")
    assert (resp.status, resp.content_type) == (405, PROBLEM)


async def _throttle(client) -> None:
    """Spend this address's failed sign-ins (3 in this module) with wrong tokens."""
    bad = {"Authorization": "Bearer sw_guess"}
    for _ in range(3):
        assert (await client.get("/v1/recipients", headers=bad)).status == 401


async def test_failed_sign_ins_are_throttled_per_address(client, auth):
    await _throttle(client)
    for header in ("Bearer sw_guess", "Bearer sw_another-guess", "Basic dXNlcjpwYXNz", "Bearer "):
        resp = await client.get("/v1/recipients", headers={"Authorization": header})
        assert resp.status == 429, header
        assert int(resp.headers["Retry-After"]) >= 1
        assert (await resp.json())["type"] == P + "too-many-sign-in-failures"
    # Another client address is not affected.
    connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
    async with aiohttp.ClientSession(connector=connector) as other:
        url = client.make_url("/v1/recipients")
        async with other.get(url, headers={"Authorization": "Bearer sw_guess"}) as resp:
            assert resp.status == 401


async def test_a_valid_token_passes_a_throttled_address(client, auth):
    """Someone guessing behind the proxies' NAT or ingress address must not lock them out."""
    await _throttle(client)
    assert (await client.get("/v1/recipients", headers=auth("engineer"))).status == 200
    resp = await client.get("/v1/snapshot", headers=auth("proxy"))
    assert resp.status == 200
    batch = {"proxy_id": "p-behind-nat", "decisions": []}
    resp = await client.post("/v1/decisions", json=batch, headers=auth("proxy"))
    assert resp.status == 200
    # The guessing itself stays throttled, before and after the valid calls.
    assert (
        await client.get("/v1/recipients", headers={"Authorization": "Bearer sw_x"})
    ).status == 429


async def _console_sign_in(client, token: str):
    form = await client.get("/ui/sign-in")
    csrf = re.search(r'name=csrf value="([^"]+)"', await form.text()).group(1)
    return await client.post(
        "/ui/sign-in", data={"csrf": csrf, "token": token}, allow_redirects=False
    )


async def test_the_console_sign_in_shares_the_throttle_and_lets_a_valid_token_in(client, tokens):
    for _ in range(3):
        assert (await _console_sign_in(client, "sw_guess")).status == 401
    resp = await _console_sign_in(client, "sw_guess")
    assert resp.status == 429 and int(resp.headers["Retry-After"]) >= 1
    assert "too many failed sign-ins" in await resp.text()
    resp = await client.get("/v1/recipients", headers={"Authorization": "Bearer sw_guess"})
    assert resp.status == 429  # one throttle for bearer tokens and the console
    resp = await _console_sign_in(client, tokens["proxy"])
    assert resp.status == 403  # valid, so past the throttle, but a proxy token cannot sign in
    resp = await _console_sign_in(client, tokens["security"])
    assert (resp.status, resp.headers["Location"]) == (303, "/ui/")
    assert (await client.get("/ui/", allow_redirects=False)).status == 200


async def test_tokens_created_or_revoked_while_throttled_count_at_once(settings, auth):
    """The throttled path knows the live tokens without a lookup per guess; it follows changes."""
    app = create_app(dataclasses.replace(settings, token_cache_ttl_s=3600.0))
    async with TestClient(RegistryTestServer(app, host="127.0.0.1", port=0)) as client:
        await _throttle(client)
        assert (await client.get("/v1/recipients", headers=auth("engineer"))).status == 200
        resp = await client.post(
            "/v1/tokens", json={"name": "eng-late", "role": "engineer"}, headers=auth("admin")
        )
        created = await resp.json()
        bearer = {"Authorization": f"Bearer {created['secret']}"}
        assert (await client.get("/v1/recipients", headers=bearer)).status == 200
        resp = await client.delete(f"/v1/tokens/{created['id']}", headers=auth("admin"))
        assert resp.status == 204
        assert (await client.get("/v1/recipients", headers=bearer)).status == 429


@pytest.mark.parametrize("path", ["/v1/logs", "/v1/decisions"])
@pytest.mark.parametrize("role", ["admin", "security", "engineer"])
async def test_ingest_accepts_only_proxy_tokens(client, auth, path, role):
    resp = await client.post(path, json=[], headers=auth(role))
    assert resp.status == 403
    assert (await resp.json())["type"] == P + "forbidden-role"


async def test_ipv4_clients_of_a_dual_stack_listener_are_counted_apart(settings):
    """On `::` an IPv4 peer is `::ffff:a.b.c.d`: counted by its IPv4 address, not one /64."""
    app = create_app(settings)
    async with TestClient(RegistryTestServer(app, host="::", port=0)) as client:
        port = client.server.port
        bad = {"Authorization": "Bearer sw_guess"}
        for source, statuses in (("127.0.0.1", [401, 401, 401, 429]), ("127.0.0.2", [401])):
            connector = aiohttp.TCPConnector(local_addr=(source, 0))
            async with aiohttp.ClientSession(connector=connector) as session:
                for status in statuses:
                    url = f"http://127.0.0.1:{port}/v1/recipients"
                    async with session.get(url, headers=bad) as resp:
                        assert resp.status == status, source


async def test_a_write_kept_out_by_another_writer_is_503_busy_with_retry_after(
    client, auth, db_url, unique
):
    """SQLite: another connection holds the write lock past the busy timeout (5 s)."""
    if not db_url.startswith("sqlite"):
        pytest.skip("SQLite's single writer lock")
    # Signed in within the minute: the token's last-used write does not wait too.
    assert (await client.get("/v1/recipients", headers=auth("engineer"))).status == 200
    holder = sqlite3.connect(
        db_url.split("///", 1)[1], isolation_level=None, check_same_thread=False, timeout=60
    )
    try:
        # Taken from a thread: the app's background writers (that last-used write, the
        # retention job's first run) may hold the lock, and they need the loop to let go of
        # it. Taken on the loop, the wait blocked them: "database is locked" under load.
        await asyncio.to_thread(holder.execute, "BEGIN IMMEDIATE")
        body = {"id": unique("busy"), "name": "Busy", "kind": "ott_provider"}
        resp = await client.post("/v1/recipients", json=body, headers=auth("engineer"))
    finally:
        if holder.in_transaction:
            holder.execute("ROLLBACK")
        holder.close()
    assert resp.status == 503
    assert (await resp.json())["type"] == P + "database-busy"
    assert int(resp.headers["Retry-After"]) >= 1
    resp = await client.post("/v1/recipients", json=body, headers=auth("engineer"))
    assert resp.status == 201


async def test_a_write_behind_a_stuck_writer_is_503_busy_after_the_lock_timeout(
    settings, auth, db_url, unique
):
    """PostgreSQL: a session outside the registry holds the writers' registry_state row and
    never ends; a write gives up after `lock_timeout_s` with a retryable 503, not a hang."""
    if not db_url.startswith("postgresql"):
        pytest.skip("PostgreSQL's lock_timeout")
    app = create_app(dataclasses.replace(settings, lock_timeout_s=0.3))
    dsn = db_url.replace("postgresql+asyncpg://", "postgresql://")
    body = {"id": unique("stuck"), "name": "Stuck", "kind": "ott_provider"}
    async with TestClient(RegistryTestServer(app, host="127.0.0.1", port=0)) as client:
        outside = await asyncpg.connect(dsn)
        try:
            tx = outside.transaction()
            await tx.start()
            await outside.execute("SELECT 1 FROM registry_state WHERE id = 1 FOR UPDATE")
            resp = await asyncio.wait_for(
                client.post("/v1/recipients", json=body, headers=auth("engineer")), 10
            )
            await tx.rollback()
        finally:
            await outside.close()
        assert resp.status == 503, await resp.text()
        assert (await resp.json())["type"] == P + "database-busy"
        assert int(resp.headers["Retry-After"]) >= 1
        resp = await client.post("/v1/recipients", json=body, headers=auth("engineer"))
        assert resp.status == 201


async def test_a_write_deadlocked_by_an_outside_session_is_503_busy_with_retry_after(
    client, auth, db_url, unique
):
    """PostgreSQL: a session outside the registry (an operator's psql) locks a recipient,
    then the registry_state row an edit of that recipient holds: the database aborts one of
    the two, and an aborted edit is a retryable 503 busy, not 'database unavailable'."""
    if not db_url.startswith("postgresql"):
        pytest.skip("PostgreSQL's deadlock detection")
    rid = unique("deadlock")
    body = {"id": rid, "name": "Deadlock", "kind": "ott_provider"}
    created = await client.post("/v1/recipients", json=body, headers=auth("engineer"))
    assert created.status == 201
    etag = created.headers["ETag"]
    dsn = db_url.replace("postgresql+asyncpg://", "postgresql://")
    outside = await asyncpg.connect(dsn)
    try:
        tx = outside.transaction()
        await tx.start()
        await outside.execute("SELECT 1 FROM recipient WHERE id = $1 FOR UPDATE", rid)
        edit = asyncio.create_task(
            client.patch(
                f"/v1/recipients/{rid}",
                json={"name": "Deadlock 2"},
                headers={**auth("engineer"), "If-Match": etag},
            )
        )
        # The edit holds registry_state and waits for the recipient; only then does the
        # outside session ask for registry_state (so the edit's deadlock check runs first).
        for _ in range(500):
            waiting = await outside.fetchval(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            if waiting:
                break
            await asyncio.sleep(0.01)
        assert waiting
        with contextlib.suppress(asyncpg.DeadlockDetectedError):
            await outside.execute("SELECT 1 FROM registry_state WHERE id = 1 FOR UPDATE")
        await tx.rollback()
        resp = await edit
    finally:
        await outside.close()
    if resp.status == 200:
        pytest.skip("the database aborted the outside session, not the edit")
    assert resp.status == 503, await resp.text()
    assert (await resp.json())["type"] == P + "database-busy"
    assert int(resp.headers["Retry-After"]) >= 1
    resp = await client.patch(
        f"/v1/recipients/{rid}",
        json={"name": "Deadlock 2"},
        headers={**auth("engineer"), "If-Match": etag},
    )
    assert resp.status == 200


async def test_a_read_does_not_wait_for_its_tokens_last_used_write(client, auth, db_url):
    """SQLite: while another writer holds the lock, a read whose token is due a last-used
    update is answered without waiting for it; the update lands once the lock is free."""
    if not db_url.startswith("sqlite"):
        pytest.skip("SQLite's single writer lock")
    resp = await client.post(
        "/v1/tokens", json={"name": "reader-busy", "role": "engineer"}, headers=auth("admin")
    )
    created = await resp.json()
    # The admin token's own last-used write (from the POST above) runs in the background: let
    # it end first.
    await asyncio.gather(*client.app[LAST_USED_WRITES].values())
    holder = sqlite3.connect(
        db_url.split("///", 1)[1], isolation_level=None, check_same_thread=False
    )
    try:
        # Taken from a thread: another background writer of the app (the retention job's first
        # run) may still hold the lock, and it needs the loop to finish and let go.
        await asyncio.to_thread(holder.execute, "BEGIN IMMEDIATE")
        bearer = {"Authorization": f"Bearer {created['secret']}"}
        resp = await client.get("/v1/recipients", headers=bearer)
        assert resp.status == 200
    finally:
        if holder.in_transaction:
            holder.execute("ROLLBACK")
        holder.close()
    for _ in range(200):  # the write goes in once the lock is free
        listed = await (await client.get("/v1/tokens", headers=auth("admin"))).json()
        mine = next(t for t in listed["items"] if t["id"] == created["id"])
        if mine["last_used_at"] is not None:
            break
        await asyncio.sleep(0.05)
    assert mine["last_used_at"] is not None
