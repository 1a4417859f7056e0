"""Retention: delete blocked flows and ledger rows older than `retention_days`, and release
proxy id bindings unused for `proxy_id_idle_days`, in batches.

Batches keep each transaction short, so ingest and queries never wait long behind a purge,
and a purge interrupted midway simply resumes at the next run. A Deployment's pods bind a
proxy id each (their pod name), so without the release the bindings of pods long gone would
pile up; a released id is bound again by the next shipper that ships as it.
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
    AuditEvent,
    BlockedFlow,
    DecisionFact,
    DecisionFactShipped,
    FlowCategory,
    FlowReason,
    LedgerEntry,
    ProxyBinding,
    as_utc,
    utcnow,
)

log = structlog.get_logger("registry.retention")

DEFAULT_BATCH = 5000


@dataclass(frozen=True)
class Purged:
    """How many rows one retention run deleted."""

    flows: int
    ledger_rows: int
    proxy_ids: int = 0


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
    proxy_id_idle_days: int = 0,
    now: datetime | None = None,
    batch: int = DEFAULT_BATCH,
) -> Purged:
    """Delete flows (with their reason/category rows) and ledger rows older than
    `retention_days`, and release the proxy id bindings unused for `proxy_id_idle_days`
    (either 0: not that part)."""
    now = now or utcnow()
    proxy_ids = 0
    if proxy_id_idle_days > 0:
        proxy_ids = await release_idle_proxy_ids(engine, proxy_id_idle_days, now=now, batch=batch)
    if retention_days <= 0:
        return Purged(0, 0, proxy_ids)
    cutoff = now - timedelta(days=retention_days)
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
    return Purged(flows, ledger_rows, proxy_ids)


RETENTION_ACTOR = "retention"


async def release_idle_proxy_ids(
    engine: AsyncEngine, idle_days: int, *, now: datetime, batch: int = DEFAULT_BATCH
) -> int:
    """Release (delete) the proxy id bindings not used for `idle_days`, each audited as
    `proxy_id.release` by `retention`; return how many.

    The delete checks `used_at` again, so a binding its shipper used since it was selected
    stays.
    """
    cutoff = now - timedelta(days=idle_days)
    binding = ProxyBinding.__table__
    idle = binding.c.used_at < cutoff
    total = 0
    while True:
        async with engine.begin() as conn:
            ids = list(
                (
                    await conn.execute(
                        sa.select(binding.c.proxy_id)
                        .where(idle)
                        .order_by(binding.c.proxy_id)
                        .limit(batch)
                    )
                ).scalars()
            )
            if not ids:
                break
            released = (
                await conn.execute(
                    sa.delete(binding)
                    .where(binding.c.proxy_id.in_(ids), idle)
                    .returning(
                        binding.c.proxy_id,
                        binding.c.token_id,
                        binding.c.bound_at,
                        binding.c.used_at,
                    )
                )
            ).all()
            if released:
                note = f"unused for {idle_days} days"
                await conn.execute(
                    sa.insert(AuditEvent.__table__),
                    [
                        {
                            "time": now,
                            "actor": RETENTION_ACTOR,
                            "action": "proxy_id.release",
                            "entity_type": "proxy_id",
                            "entity_id": row.proxy_id,
                            "before": {
                                "token_id": row.token_id,
                                "bound_at": as_utc(row.bound_at).isoformat(),
                                "used_at": as_utc(row.used_at).isoformat(),
                            },
                            "note": note,
                        }
                        for row in released
                    ],
                )
        total += len(released)
        await asyncio.sleep(0)  # let requests run between batches
    if total:
        log.info("retention.proxy_ids_released", proxy_ids=total, cutoff=cutoff.isoformat())
    return total


async def run_periodically(
    engine: AsyncEngine, retention_days: int, interval_s: float, proxy_id_idle_days: int = 0
) -> None:
    """Enforce retention now and then every `interval_s`; a failed run is logged and retried."""
    while True:
        try:
            await enforce_retention(engine, retention_days, proxy_id_idle_days=proxy_id_idle_days)
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
    if settings.retention_days > 0 or settings.proxy_id_idle_days > 0:
        task = asyncio.create_task(
            run_periodically(
                app[keys.ENGINE],
                settings.retention_days,
                settings.retention_interval_s,
                settings.proxy_id_idle_days,
            ),
            name="retention",
        )
    yield
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
