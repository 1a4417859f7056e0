"""Alembic migrations: every revision walks up, down and up again on both databases."""

from __future__ import annotations

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
