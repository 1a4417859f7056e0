"""Alembic migrations: every revision walks up, down and up again on both databases."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from registry import db
from registry.models import metadata


def revisions() -> list[str]:
    script = ScriptDirectory.from_config(db.alembic_config())
    return [r.revision for r in reversed(list(script.walk_revisions()))]


async def tables(engine) -> set[str]:
    async with engine.connect() as conn:
        names = await conn.run_sync(lambda c: set(sa.inspect(c).get_table_names()))
    return names - {"alembic_version"}


async def schema_drift(engine) -> list:
    async with engine.connect() as conn:
        return await conn.run_sync(
            lambda c: compare_metadata(
                MigrationContext.configure(c, opts={"compare_type": True}), metadata
            )
        )


async def test_every_migration_walks_up_down_and_up(db_url):
    engine = db.create_engine(db_url)
    try:
        await db.migrate(engine, "base", downgrade=True)
        assert await tables(engine) == set()
        revs = revisions()
        for rev in revs:
            await db.migrate(engine, rev)
        assert await tables(engine) == set(metadata.tables)
        assert await schema_drift(engine) == []
        for rev in reversed(revs[:-1]):
            await db.migrate(engine, rev, downgrade=True)
        await db.migrate(engine, "base", downgrade=True)
        assert await tables(engine) == set()
        await db.migrate(engine, "head")
        assert await schema_drift(engine) == []
        async with engine.connect() as conn:
            state = (await conn.execute(sa.text("SELECT id, version FROM registry_state"))).all()
        assert [tuple(row) for row in state] == [(1, 0)]
    finally:
        await engine.dispose()


async def test_0003_redacts_stored_paths_and_keeps_reason_codes(db_url):
    # A flow stored before the proxies redacted paths: the number must leave the database.
    engine = db.create_engine(db_url)
    decision_id = "mig-0003-" + "0" * 8
    old_flow = sa.table(
        "blocked_flow",
        *(sa.column(c) for c in ("decision_id", "action", "mode", "host", "method", "path")),
        *(sa.column(c) for c in ("triage_state", "would_block")),
        sa.column("time", sa.DateTime(timezone=True)),
        *(sa.column(c, sa.JSON) for c in ("categories", "reason_codes", "findings")),
    )
    row = {
        "decision_id": decision_id,
        "time": datetime(2026, 11, 20, 12, tzinfo=UTC),
        "action": "deny",
        "would_block": False,
        "mode": "enforce",
        "host": "api.vendor.test",
        "method": "GET",
        "path": "/v1/lookup?phone=%2B6591234567&page=2",
        "categories": ["contact.phone_number"],
        "reason_codes": ["CATEGORY_NOT_APPROVED"],
        "findings": [{"category": "contact.phone_number", "location": "query:phone"}],
        "triage_state": "new",
    }
    try:
        await db.migrate(engine, "base", downgrade=True)
        await db.migrate(engine, "0002")
        async with engine.begin() as conn:
            await conn.execute(sa.insert(old_flow), [row])
        await db.migrate(engine, "0003")
        async with engine.connect() as conn:
            path, reasons = (
                await conn.execute(
                    sa.text("SELECT path, reasons FROM blocked_flow WHERE decision_id = :d"),
                    {"d": decision_id},
                )
            ).one()
        assert path == "/v1/lookup?phone=[contact.phone_number]&page=2"
        reasons = orjson.loads(reasons) if isinstance(reasons, str) else reasons
        assert reasons == [{"code": "CATEGORY_NOT_APPROVED"}]
    finally:
        await db.migrate(engine, "base", downgrade=True)
        await db.migrate(engine, "head")
        await engine.dispose()
