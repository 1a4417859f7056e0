"""Retention: delete blocked flows and ledger rows older than `retention_days`, in batches.

Batches keep each transaction short, so ingest and queries never wait long behind a purge,
and a purge interrupted midway simply resumes at the next run.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
import structlog
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from registry.models import (
    BlockedFlow,
    DecisionFact,
    DecisionFactShipped,
    FlowCategory,
    FlowReason,
    LedgerEntry,
    utcnow,
)

log = structlog.get_logger("registry.retention")

DEFAULT_BATCH = 5000


@dataclass(frozen=True)
class Purged:
    """How many rows one retention run deleted."""

    flows: int
    ledger_rows: int


async def _delete_in_batches(engine: AsyncEngine, select_ids: sa.Select, delete_ids) -> int:
    total = 0
    while True:
        async with engine.begin() as conn:
            # One column: its values; several (a flow's key): tuples of them.
            ids = [r[0] if len(r) == 1 else tuple(r) for r in await conn.execute(select_ids)]
            if not ids:
                return total
            for stmt in delete_ids(ids):
                await conn.execute(stmt)
        total += len(ids)
        await asyncio.sleep(0)  # let requests run between batches


async def enforce_retention(
    engine: AsyncEngine,
    retention_days: int,
    *,
    now: datetime | None = None,
    batch: int = DEFAULT_BATCH,
) -> Purged:
    """Delete flows (with their reason/category rows) and ledger rows older than the cutoff."""
    cutoff = (now or utcnow()) - timedelta(days=retention_days)
    flow = BlockedFlow.__table__
    flows = await _delete_in_batches(
        engine,
        sa.select(flow.c.token_id, flow.c.decision_id).where(flow.c.time < cutoff).limit(batch),
        lambda keys: tuple(
            # Explicit child deletes: SQLite enforces ON DELETE CASCADE only with the pragma on.
            sa.delete(table).where(sa.tuple_(table.c.token_id, table.c.decision_id).in_(keys))
            for table in (FlowReason.__table__, FlowCategory.__table__, flow)
        ),
    )
    ledger = LedgerEntry.__table__
    ledger_rows = await _delete_in_batches(
        engine,
        sa.select(ledger.c.id).where(ledger.c.minute < cutoff).limit(batch),
        lambda ids: (sa.delete(ledger).where(ledger.c.id.in_(ids)),),
    )
    facts = DecisionFact.__table__
    fact_rows = await _delete_in_batches(
        engine,
        sa.select(facts.c.id).where(facts.c.hour < cutoff).limit(batch),
        lambda ids: (sa.delete(facts).where(facts.c.id.in_(ids)),),
    )
    # The journal of counted rows: by time range, no ids needed.
    async with engine.begin() as conn:
        shipped = DecisionFactShipped.__table__
        await conn.execute(sa.delete(shipped).where(shipped.c.minute < cutoff))
    if flows or ledger_rows or fact_rows:
        log.info(
            "retention.purged",
            flows=flows,
            ledger_rows=ledger_rows,
            fact_rows=fact_rows,
            cutoff=cutoff.isoformat(),
        )
    return Purged(flows, ledger_rows)


async def run_periodically(engine: AsyncEngine, retention_days: int, interval_s: float) -> None:
    """Enforce retention now and then every `interval_s`; a failed run is logged and retried."""
    while True:
        try:
            await enforce_retention(engine, retention_days)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("retention.failed")
        await asyncio.sleep(interval_s)


async def retention_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: the retention job runs for the app's lifetime (after the database opens)."""
    from registry.api import keys  # the API package wires this module, not the other way round

    settings = app[keys.SETTINGS]
    task = None
    if settings.retention_days > 0:
        task = asyncio.create_task(
            run_periodically(
                app[keys.ENGINE], settings.retention_days, settings.retention_interval_s
            ),
            name="retention",
        )
    yield
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
