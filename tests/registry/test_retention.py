"""Retention: flows and ledger rows older than the setting are deleted, newer ones kept; proxy
id bindings unused for `proxy_id_idle_days` are released."""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import orjson
import pytest
import sqlalchemy as sa
from aiohttp.test_utils import TestClient, TestServer

from registry import db
from registry.api.app import create_app
from registry.api.decisions import LedgerIn, check_record, flow_row, store_flows, store_ledger
from registry.ingest import bind_proxy_ids
from registry.models import (
    AuditEvent,
    BlockedFlow,
    FlowCategory,
    FlowReason,
    LedgerEntry,
    ProxyBinding,
    as_utc,
)
from registry.retention import enforce_retention
from registry.settings import Settings

NOW = datetime.now(UTC)


def record(age_days: float) -> dict:
    return {
        "time": (NOW - timedelta(days=age_days)).isoformat(),
        "decision_id": uuid.uuid4().hex,
        "action": "deny",
        "reason_codes": ["CATEGORY_NOT_APPROVED"],
        "categories": ["contact.email"],
        "recipient_id": "acme",
    }


def ledger_row(age_days: float, workload: str) -> dict:
    minute = (NOW - timedelta(days=age_days)).replace(second=0, microsecond=0)
    return {"minute": minute.isoformat(), "source_workload": workload, "category": "", "count": 1}


async def ship(client, auth, decisions, ledger) -> None:
    resp = await client.post(
        "/v1/decisions",
        data=gzip.compress(
            orjson.dumps({"proxy_id": "p-ret", "decisions": decisions, "ledger": ledger})
        ),
        headers={**auth("proxy"), "Content-Encoding": "gzip"},
    )
    assert resp.status == 200
    assert (await resp.json())["rejected"] == []


async def existing(engine, column, values) -> set:
    async with engine.connect() as conn:
        return set((await conn.execute(sa.select(column).where(column.in_(values)))).scalars())


async def test_old_flows_and_ledger_rows_are_deleted_in_batches(db_url):
    # Stored through the ingest code, without an app (whose own job would race this one).
    workload = f"w-{uuid.uuid4().hex[:6]}"
    old = [record(40) for _ in range(7)]
    young = [record(10) for _ in range(3)]
    engine = db.create_engine(db_url)
    try:
        async with engine.begin() as conn:
            rows = [flow_row(check_record(r), "p-ret", 1) for r in old + young]
            await store_flows(conn, rows)
            ledger = [ledger_row(40, workload), ledger_row(1, workload)]
            await store_ledger(
                conn,
                [
                    {**LedgerIn.model_validate(r).model_dump(), "proxy_id": "p", "token_id": 1}
                    for r in ledger
                ],
            )
        purged = await enforce_retention(engine, 30, batch=2)
        ids = [r["decision_id"] for r in old + young]
        assert await existing(engine, BlockedFlow.decision_id, ids) == {
            r["decision_id"] for r in young
        }
        # Child rows go with their flow (no orphans left for the reason/category filters).
        assert len(await existing(engine, FlowReason.decision_id, ids)) == 3
        assert len(await existing(engine, FlowCategory.decision_id, ids)) == 3
        async with engine.connect() as conn:
            minutes = (
                (
                    await conn.execute(
                        sa.select(LedgerEntry.minute).where(LedgerEntry.source_workload == workload)
                    )
                )
                .scalars()
                .all()
            )
        assert len(minutes) == 1
        assert purged.flows == 7
        assert purged.ledger_rows == 1
    finally:
        await engine.dispose()


@pytest.fixture
def settings(settings):
    return dataclasses.replace(settings, retention_days=30, retention_interval_s=0.2)


async def test_the_app_runs_retention_periodically(client, auth, db_url):
    old = record(45)
    await ship(client, auth, [old], [])
    engine = db.create_engine(db_url)
    try:
        for _ in range(50):
            if not await existing(engine, BlockedFlow.decision_id, [old["decision_id"]]):
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail("the retention job did not delete the old flow")
    finally:
        await engine.dispose()


# -- proxy id bindings -------------------------------------------------------------------------


async def set_used_at(engine, proxy_id: str, when: datetime) -> None:
    async with engine.begin() as conn:
        binding = ProxyBinding.__table__
        await conn.execute(
            sa.update(binding).where(binding.c.proxy_id == proxy_id).values(used_at=when)
        )


async def used_at(engine, proxy_id: str) -> datetime | None:
    binding = ProxyBinding.__table__
    async with engine.connect() as conn:
        found = await conn.execute(
            sa.select(binding.c.used_at).where(binding.c.proxy_id == proxy_id)
        )
        return as_utc(found.scalar_one_or_none())


async def test_bindings_unused_for_the_idle_days_are_released_and_audited(db_url):
    # Bound through the ingest code, without an app (whose own job would race this one).
    stale, gone, fresh = (f"pod-{uuid.uuid4().hex[:8]}" for _ in range(3))
    engine = db.create_engine(db_url)
    try:
        async with engine.begin() as conn:
            await bind_proxy_ids(conn, {stale, fresh}, 7)
            await bind_proxy_ids(conn, {gone}, 8)
        await set_used_at(engine, stale, NOW - timedelta(days=31))
        await set_used_at(engine, gone, NOW - timedelta(days=90))
        await set_used_at(engine, fresh, NOW - timedelta(days=29))
        purged = await enforce_retention(engine, 0, proxy_id_idle_days=30, now=NOW, batch=1)
        assert purged.proxy_ids >= 2 and (purged.flows, purged.ledger_rows) == (0, 0)
        binding = ProxyBinding.__table__
        assert await existing(engine, binding.c.proxy_id, [stale, gone, fresh]) == {fresh}
        audit = AuditEvent.__table__
        async with engine.connect() as conn:
            events = (
                await conn.execute(
                    sa.select(audit).where(audit.c.entity_id.in_([stale, gone, fresh]))
                )
            ).all()
        assert {(e.entity_id, e.action, e.actor, e.entity_type) for e in events} == {
            (stale, "proxy_id.release", "retention", "proxy_id"),
            (gone, "proxy_id.release", "retention", "proxy_id"),
        }
        assert {e.entity_id: e.before["token_id"] for e in events} == {stale: 7, gone: 8}
        # 0 idle days releases nothing, however old.
        await set_used_at(engine, fresh, NOW - timedelta(days=400))
        assert (await enforce_retention(engine, 0, now=NOW)).proxy_ids == 0
        assert await existing(engine, binding.c.proxy_id, [fresh]) == {fresh}
    finally:
        await engine.dispose()


async def test_shipping_marks_its_own_binding_used_at_most_hourly(client, auth, db_url, tokens):
    pod = f"pod-{uuid.uuid4().hex[:8]}"
    await ship_as(client, auth("proxy"), pod)
    engine = db.create_engine(db_url)
    try:
        assert datetime.now(UTC) - await used_at(engine, pod) < timedelta(minutes=1)
        two_days = datetime.now(UTC) - timedelta(days=2)
        await set_used_at(engine, pod, two_days)
        await ship_as(client, auth("proxy"), pod)
        assert datetime.now(UTC) - await used_at(engine, pod) < timedelta(minutes=1)
        # Within the hour an upload writes nothing to the binding.
        half_an_hour = datetime.now(UTC) - timedelta(minutes=30)
        await set_used_at(engine, pod, half_an_hour)
        await ship_as(client, auth("proxy"), pod)
        assert await used_at(engine, pod) == half_an_hour
        # Another token naming the proxy id is refused and does not keep the binding alive.
        await set_used_at(engine, pod, two_days)
        other = await client.post(
            "/v1/tokens", json={"name": f"o-{pod}", "role": "proxy"}, headers=auth("admin")
        )
        intruder = {"Authorization": f"Bearer {(await other.json())['secret']}"}
        assert (await ship_as(client, intruder, pod, expect=403)) == 403
        assert await used_at(engine, pod) == two_days
    finally:
        await engine.dispose()


async def test_the_app_releases_idle_bindings_so_the_id_can_be_bound_again(client, auth, db_url):
    pod = f"pod-{uuid.uuid4().hex[:8]}"
    await ship_as(client, auth("proxy"), pod)
    other = await client.post(
        "/v1/tokens", json={"name": f"next-{pod}", "role": "proxy"}, headers=auth("admin")
    )
    successor = {"Authorization": f"Bearer {(await other.json())['secret']}"}
    assert await ship_as(client, successor, pod, expect=403) == 403
    engine = db.create_engine(db_url)
    try:
        await set_used_at(engine, pod, datetime.now(UTC) - timedelta(days=31))
        for _ in range(50):  # the module's app runs retention every 0.2 s
            if await used_at(engine, pod) is None:
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail("the retention job did not release the idle binding")
    finally:
        await engine.dispose()
    assert await ship_as(client, successor, pod) == 200
    listed = await client.get("/v1/proxy-ids", headers=auth("admin"))
    [mine] = [b for b in (await listed.json())["items"] if b["proxy_id"] == pod]
    assert mine["shipped_by"]["token_name"] == f"next-{pod}"
    assert datetime.now(UTC) - datetime.fromisoformat(mine["used_at"]) < timedelta(minutes=1)


async def ship_as(client, headers, proxy_id: str, *, expect: int = 200) -> int:
    resp = await client.post(
        "/v1/decisions",
        data=gzip.compress(orjson.dumps({"proxy_id": proxy_id, "decisions": [], "ledger": []})),
        headers={**headers, "Content-Encoding": "gzip"},
    )
    assert resp.status == expect, await resp.text()
    return resp.status


def test_apps_stopped_right_after_they_started_leave_no_query_behind(db_url):
    """The retention job's first run starts with the app; an app stopped at once used to
    cancel it mid-way, and a connection cancelled while aiosqlite's thread was opening it was
    stopped without waiting: the thread then answered a loop already closed ('Event loop is
    closed', about 1 stop in 25 here). The job is now stopped between batches, never inside
    one. Fifty starts and stops: without the fix this failed nearly every run."""
    if not db_url.startswith("sqlite"):
        pytest.skip("aiosqlite's worker thread")
    settings = Settings(db_url=db_url, retention_days=30, proxy_id_idle_days=30)

    async def start_and_stop() -> None:
        async with TestClient(TestServer(create_app(settings), host="127.0.0.1", port=0)):
            await asyncio.sleep(0)

    errors: list[BaseException | None] = []
    hook, threading.excepthook = threading.excepthook, lambda args: errors.append(args.exc_value)
    try:
        for _ in range(50):
            asyncio.run(start_and_stop())  # each loop is closed when this returns
        for _ in range(100):  # a query left behind ends soon after its loop
            if not any("_connection_worker_thread" in t.name for t in threading.enumerate()):
                break
            time.sleep(0.05)
    finally:
        threading.excepthook = hook
    assert errors == []
