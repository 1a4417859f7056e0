"""Alembic migrations: every revision walks up, down and up again on both databases."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from registry import db
from registry.models import as_utc, metadata


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


async def test_0008_keys_shipped_rows_by_token_and_downgrades_to_one_row_per_key(db_url):
    engine = db.create_engine(db_url)
    minute = datetime(2026, 11, 20, 12, 5, tzinfo=UTC)
    key = {
        "minute": minute,
        "source_workload": "w",
        "source_namespace": "ns",
        "recipient_id": "twilio",
        "purpose": "service_delivery",
        "category": "contact.phone_number",
        "proxy_id": "pod-a",
    }
    old_ledger = sa.table(
        "ledger_entry",
        sa.column("minute", sa.DateTime(timezone=True)),
        *(sa.column(c) for c in key if c != "minute"),
        sa.column("count"),
    )
    new_ledger = sa.table(
        "ledger_entry",
        sa.column("minute", sa.DateTime(timezone=True)),
        *(sa.column(c) for c in key if c != "minute"),
        sa.column("count"),
        sa.column("token_id"),
    )
    select_ledger = sa.text("SELECT token_id, count FROM ledger_entry ORDER BY token_id")
    shipped = {"proxy_id": "pod-a", "minute": minute, "fact_key": "f" * 64}
    old_shipped = sa.table(
        "decision_fact_shipped",
        sa.column("proxy_id"),
        sa.column("minute", sa.DateTime(timezone=True)),
        sa.column("fact_key"),
    )
    new_shipped = sa.table(
        "decision_fact_shipped",
        sa.column("proxy_id"),
        sa.column("minute", sa.DateTime(timezone=True)),
        sa.column("fact_key"),
        sa.column("token_id"),
    )
    select_shipped = sa.text("SELECT token_id FROM decision_fact_shipped ORDER BY token_id")
    try:
        await db.migrate(engine, "base", downgrade=True)
        await db.migrate(engine, "0007")
        async with engine.begin() as conn:
            await conn.execute(sa.insert(old_ledger), [{**key, "count": 7}])
            await conn.execute(sa.insert(old_shipped), [shipped])
        await db.migrate(engine, "0008")
        async with engine.begin() as conn:
            assert [tuple(r) for r in (await conn.execute(select_ledger)).all()] == [(0, 7)]
            assert (await conn.execute(select_shipped)).scalars().all() == [0]
            # Another token's rows under the same proxy id and key: stored apart now.
            await conn.execute(sa.insert(new_ledger), [{**key, "count": 1, "token_id": 9}])
            await conn.execute(sa.insert(new_shipped), [{**shipped, "token_id": 9}])
            assert len((await conn.execute(select_ledger)).all()) == 2
            assert len((await conn.execute(select_shipped)).all()) == 2
        await db.migrate(engine, "0007", downgrade=True)
        async with engine.connect() as conn:
            counts = await conn.execute(sa.text("SELECT count FROM ledger_entry"))
            assert counts.scalars().all() == [7]  # the oldest token's row is kept
            journal = await conn.execute(sa.text("SELECT proxy_id FROM decision_fact_shipped"))
            assert journal.scalars().all() == ["pod-a"]
    finally:
        await db.migrate(engine, "base", downgrade=True)
        await db.migrate(engine, "head")
        await engine.dispose()


async def test_0009_keys_flows_by_shipper_and_binds_the_proxy_ids_seen(db_url):
    """A flow of 0008 (token 3) and one of before 0008 (no token) keep their reasons; the
    proxy ids seen are bound to their lowest token; downgrading keeps one flow per id."""
    engine = db.create_engine(db_url)
    when = datetime(2026, 11, 20, 12, 5, tzinfo=UTC)
    flow = sa.table(
        "blocked_flow",
        *(sa.column(c) for c in ("decision_id", "action", "mode", "host", "method", "path")),
        *(sa.column(c) for c in ("triage_state", "would_block", "proxy_id", "token_id")),
        sa.column("time", sa.DateTime(timezone=True)),
        *(sa.column(c, sa.JSON) for c in ("categories", "reason_codes", "findings", "reasons")),
    )
    reason = sa.table(
        "flow_reason",
        sa.column("decision_id"),
        sa.column("code"),
        sa.column("time", sa.DateTime(timezone=True)),
    )
    base = {
        "action": "deny",
        "mode": "enforce",
        "host": "h.example",
        "method": "GET",
        "path": "/",
        "triage_state": "new",
        "would_block": False,
        "time": when,
        "categories": [],
        "reason_codes": ["UNKNOWN_RECIPIENT"],
        "findings": [],
        "reasons": [],
    }
    try:
        await db.migrate(engine, "base", downgrade=True)
        await db.migrate(engine, "0008")
        async with engine.begin() as conn:
            await conn.execute(
                sa.insert(flow),
                [
                    {**base, "decision_id": "d-old", "proxy_id": "pod-a", "token_id": None},
                    {**base, "decision_id": "d-new", "proxy_id": "pod-b", "token_id": 3},
                ],
            )
            await conn.execute(
                sa.insert(reason),
                [
                    {"decision_id": d, "code": "UNKNOWN_RECIPIENT", "time": when}
                    for d in ("d-old", "d-new")
                ],
            )
        await db.migrate(engine, "0009")
        async with engine.begin() as conn:
            flows = await conn.execute(
                sa.text("SELECT token_id, decision_id, version FROM blocked_flow ORDER BY 2")
            )
            assert [tuple(r) for r in flows] == [(3, "d-new", 1), (0, "d-old", 1)]
            reasons = await conn.execute(
                sa.text("SELECT token_id, decision_id FROM flow_reason ORDER BY 2")
            )
            assert [tuple(r) for r in reasons] == [(3, "d-new"), (0, "d-old")]
            bound = await conn.execute(sa.text("SELECT proxy_id, token_id FROM proxy_binding"))
            assert [tuple(r) for r in bound] == [("pod-b", 3)]
            # Another shipper's flow of the same decision id is a row of its own now.
            await conn.execute(sa.insert(flow), [{**base, "decision_id": "d-new", "token_id": 5}])
        await db.migrate(engine, "0008", downgrade=True)
        async with engine.connect() as conn:
            kept = await conn.execute(sa.text("SELECT decision_id, token_id FROM blocked_flow"))
            assert sorted(tuple(r) for r in kept) == [("d-new", 3), ("d-old", None)]
            reasons = await conn.execute(sa.text("SELECT decision_id FROM flow_reason"))
            assert sorted(reasons.scalars().all()) == ["d-new", "d-old"]
    finally:
        await db.migrate(engine, "base", downgrade=True)
        await db.migrate(engine, "head")
        await engine.dispose()


async def test_0010_and_0011_keep_bindings_used_and_end_a_grace_on_the_way_down(db_url):
    """0011 counts a binding as used when it was bound; going below 0010 revokes a token in
    its grace (without `expires_at` it would authenticate for ever) and leaves others alone."""
    engine = db.create_engine(db_url)
    bound = datetime(2026, 11, 20, 12, 5, tzinfo=UTC)
    later = datetime(2099, 1, 1, tzinfo=UTC)
    token = sa.table(
        "api_token",
        *(sa.column(c) for c in ("id", "name", "owner", "role", "token_hash")),
        *(sa.column(c, sa.DateTime(timezone=True)) for c in ("created_at", "expires_at")),
    )
    binding = sa.table(
        "proxy_binding",
        sa.column("proxy_id"),
        sa.column("token_id"),
        sa.column("bound_at", sa.DateTime(timezone=True)),
    )
    try:
        await db.migrate(engine, "base", downgrade=True)
        await db.migrate(engine, "0010")
        async with engine.begin() as conn:
            base = {"owner": "o", "role": "proxy", "created_at": bound}
            await conn.execute(
                sa.insert(token),
                [
                    {
                        **base,
                        "id": 1,
                        "name": "rotated",
                        "token_hash": "a" * 64,
                        "expires_at": later,
                    },
                    {**base, "id": 2, "name": "plain", "token_hash": "b" * 64, "expires_at": None},
                ],
            )
            await conn.execute(
                sa.insert(binding), [{"proxy_id": "pod-a", "token_id": 1, "bound_at": bound}]
            )
        await db.migrate(engine, "0011")
        async with engine.connect() as conn:
            used = await conn.execute(sa.text("SELECT proxy_id, used_at FROM proxy_binding"))
            [(proxy_id, used_at)] = used.all()
            assert proxy_id == "pod-a"
            if isinstance(used_at, str):  # SQLite through text(): the stored string
                used_at = datetime.fromisoformat(used_at)
            assert as_utc(used_at) == bound
        await db.migrate(engine, "0009", downgrade=True)
        async with engine.connect() as conn:
            revoked = await conn.execute(
                sa.text("SELECT name FROM api_token WHERE revoked_at IS NOT NULL")
            )
            assert revoked.scalars().all() == ["rotated"]
    finally:
        await db.migrate(engine, "base", downgrade=True)
        await db.migrate(engine, "head")
        await engine.dispose()
