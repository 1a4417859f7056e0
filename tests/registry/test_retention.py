"""Retention: flows and ledger rows older than the setting are deleted, newer ones kept."""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import uuid
from datetime import UTC, datetime, timedelta

import orjson
import pytest
import sqlalchemy as sa

from registry import db
from registry.api.decisions import LedgerIn, check_record, flow_row, store_flows, store_ledger
from registry.models import BlockedFlow, FlowCategory, FlowReason, LedgerEntry
from registry.retention import enforce_retention

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
