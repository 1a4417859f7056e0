"""Retention: delete blocked flows and ledger rows older than `retention_days`, and release
proxy id bindings unused for `proxy_id_idle_days`, in batches.

Batches keep each transaction short, so ingest and queries never wait long behind a purge,
and a purge interrupted midway simply resumes at the next run. The app stops the job between
batches, never inside one: a task cancelled while aiosqlite's thread runs its query left that
thread to answer a loop already closed ("Event loop is closed" in tests that stop an app
right after it started, whose first run was still going). A Deployment's pods bind a
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
# How long a stopping app waits for the batch in progress before it cancels the job.
STOP_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Purged:
    """How many rows one retention run deleted."""

    flows: int
    ledger_rows: int
    proxy_ids: int = 0


def _stopping(stop: asyncio.Event | None) -> bool:
    return stop is not None and stop.is_set()


async def _delete_in_batches(
    engine: AsyncEngine, select_ids: sa.Select, delete_ids, stop: asyncio.Event | None
) -> int:
    total = 0
    while not _stopping(stop):
        async with engine.begin() as conn:
            # One column: its values; several (a flow's key): tuples of them.
            ids = [r[0] if len(r) == 1 else tuple(r) for r in await conn.execute(select_ids)]
            if not ids:
                return total
            for stmt in delete_ids(ids):
                await conn.execute(stmt)
        total += len(ids)
        await asyncio.sleep(0)  # let requests run between batches
    return total


async def enforce_retention(
    engine: AsyncEngine,
    retention_days: int,
    *,
    proxy_id_idle_days: int = 0,
    now: datetime | None = None,
    batch: int = DEFAULT_BATCH,
    stop: asyncio.Event | None = None,
) -> Purged:
    """Delete flows (with their reason/category rows) and ledger rows older than
    `retention_days`, and release the proxy id bindings unused for `proxy_id_idle_days`
    (either 0: not that part). Once `stop` is set, no further batch starts."""
    now = now or utcnow()
    proxy_ids = 0
    if proxy_id_idle_days > 0:
        proxy_ids = await release_idle_proxy_ids(
            engine, proxy_id_idle_days, now=now, batch=batch, stop=stop
        )
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
        stop,
    )
    ledger = LedgerEntry.__table__
    ledger_rows = await _delete_in_batches(
        engine,
        sa.select(ledger.c.id).where(ledger.c.minute < cutoff).limit(batch),
        lambda ids: (sa.delete(ledger).where(ledger.c.id.in_(ids)),),
        stop,
    )
    facts = DecisionFact.__table__
    fact_rows = await _delete_in_batches(
        engine,
        sa.select(facts.c.id).where(facts.c.hour < cutoff).limit(batch),
        lambda ids: (sa.delete(facts).where(facts.c.id.in_(ids)),),
        stop,
    )
    if not _stopping(stop):
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
    engine: AsyncEngine,
    idle_days: int,
    *,
    now: datetime,
    batch: int = DEFAULT_BATCH,
    stop: asyncio.Event | None = None,
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
    while not _stopping(stop):
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
    engine: AsyncEngine,
    retention_days: int,
    interval_s: float,
    proxy_id_idle_days: int,
    stop: asyncio.Event,
) -> None:
    """Enforce retention now and then every `interval_s` until `stop` is set (a run stops
    between two batches); a failed run is logged and retried."""
    while not stop.is_set():
        try:
            await enforce_retention(
                engine, retention_days, proxy_id_idle_days=proxy_id_idle_days, stop=stop
            )
        except Exception:
            log.exception("retention.failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)


async def retention_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: the retention job runs for the app's lifetime (after the database opens)."""
    from registry.api import keys  # the API package wires this module, not the other way round

    settings = app[keys.SETTINGS]
    task = None
    stop = asyncio.Event()
    if settings.retention_days > 0 or settings.proxy_id_idle_days > 0:
        task = asyncio.create_task(
            run_periodically(
                app[keys.ENGINE],
                settings.retention_days,
                settings.retention_interval_s,
                settings.proxy_id_idle_days,
                stop,
            ),
            name="retention",
        )
    yield
    if task is not None:
        stop.set()  # ends the run after its batch in progress, before the database closes
        done, _ = await asyncio.wait({task}, timeout=STOP_TIMEOUT_S)
        if not done:  # a batch stuck on the database: cancelled, as a last resort
            log.warning("retention.stop_timeout", timeout_s=STOP_TIMEOUT_S)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
