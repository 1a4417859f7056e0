"""Storing what proxies ship: decision records become blocked flows, ledger rows counts.

Idempotent by design: a flow is keyed by (shipper, decision id) (`ON CONFLICT DO NOTHING`), a
ledger row by (shipper, proxy, minute, source, recipient, purpose, category) and a re-send
replaces its count. Used by the decision and OPA-log routes alike.

The shipper is the identity, not the `proxy_id` a body names: a token's rotation lineage
(`ApiToken.shipper_id`: the lineage's first token, the `token_id` column of every shipped
row), so a rotated token re-sending a minute replaces its predecessor's counts. One shipper can
never replace, suppress, shadow or block another's rows: a decision id shipped by two is two
flows. A proxy id is bound to the shipper that first shipped as it (`bind_proxy_ids`).
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from registry.errors import forbidden
from registry.models import (
    BlockedFlow,
    DecisionFact,
    DecisionFactShipped,
    FlowCategory,
    FlowReason,
    LedgerEntry,
    ProxyBinding,
    utcnow,
)
from sharewall.decision_record import FACT_FIELDS, Vocabulary, validate_record
from sharewall.taxonomy import load_taxonomy


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


@cache
def _vocabulary() -> Vocabulary:
    taxonomy = load_taxonomy()
    return Vocabulary(taxonomy.is_reason_code, taxonomy.is_category)


def check_record(doc: Any) -> dict[str, Any]:
    """A shipped decision record (`sharewall.decision_record`), validated against the taxonomy.

    Raises `RecordError` naming the bad field; the path comes back redacted.
    """
    return validate_record(doc, _vocabulary())


class LedgerIn(BaseModel):
    """Allowed calls of one minute and key (`proxy.ledger`); `""` means unknown / none."""

    model_config = ConfigDict(extra="forbid")

    minute: datetime
    source_workload: str = Field(default="", max_length=200)
    source_namespace: str = Field(default="", max_length=200)
    recipient_id: str = Field(default="", max_length=63)
    purpose: str = Field(default="", max_length=64)
    category: str = Field(default="", max_length=64)
    count: int = Field(ge=0, le=10**12)

    @field_validator("minute")
    @classmethod
    def _whole_minute(cls, value: datetime) -> datetime:
        return _aware(value).replace(second=0, microsecond=0)

    @field_validator("category")
    @classmethod
    def _known_category(cls, value: str) -> str:
        if value and not load_taxonomy().is_category(value):
            raise ValueError(f"unknown category {value!r}")
        return value


# How stale a binding's `used_at` may get before an upload rewrites it: bindings are released
# after days unused (`Settings.proxy_id_idle_days`), so an hour's precision is plenty.
BINDING_USE_EVERY = timedelta(hours=1)


def _insert(conn: AsyncConnection, table: sa.Table) -> Any:
    """The dialect's INSERT, which has `on_conflict_do_nothing`/`_update` on both databases."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)


def flow_row(record: dict[str, Any], proxy_id: str, shipper_id: int) -> dict[str, Any]:
    """The `blocked_flow` row of a validated decision record (`check_record`) and its shipper
    (`ApiToken.shipper_id`)."""
    return {
        "decision_id": record["decision_id"],
        "time": record["time"],
        "action": record["action"],
        "would_block": record["would_block"],
        "mode": record["mode"],
        "recipient_id": record["recipient_id"],
        "host": record["host"],
        "method": record["method"],
        "path": record["path"],
        "purpose": record["purpose"],
        "categories": record["categories"],
        "reason_codes": record["reason_codes"],
        "reasons": record["reasons"],
        "fault": record["fault"],
        "status": record["status"],
        "source_workload": record["source_workload"],
        "source_namespace": record["source_namespace"],
        "findings": record["findings"],
        "latency_ms": record["latency_ms"],
        "proxy_id": proxy_id,
        "token_id": shipper_id,
        "triage_state": "new",
    }


async def bind_proxy_ids(conn: AsyncConnection, proxy_ids: set[str], shipper_id: int) -> None:
    """Bind each unbound proxy id to `shipper_id` and mark its own bindings used; 403
    `proxy-id-bound` when one is bound to another shipper (nothing of the upload is then
    stored: the caller's transaction ends)."""
    if not proxy_ids:
        return
    table = ProxyBinding.__table__
    now = utcnow()
    insert = _insert(conn, table)
    await conn.execute(
        insert.on_conflict_do_update(
            index_elements=[table.c.proxy_id],
            set_={"used_at": insert.excluded.used_at},
            # Another shipper's binding is left alone (refused below); our own is written
            # at most once per BINDING_USE_EVERY, not on every upload.
            where=sa.and_(
                table.c.token_id == shipper_id, table.c.used_at < now - BINDING_USE_EVERY
            ),
        ),
        [
            {"proxy_id": p, "token_id": shipper_id, "bound_at": now, "used_at": now}
            for p in sorted(proxy_ids)
        ],
    )
    taken = (
        (
            await conn.execute(
                sa.select(table.c.proxy_id)
                .where(table.c.proxy_id.in_(sorted(proxy_ids)), table.c.token_id != shipper_id)
                .order_by(table.c.proxy_id)
            )
        )
        .scalars()
        .all()
    )
    if taken:
        error = forbidden(
            f"proxy id {taken[0]!r} is bound to another proxy token (GET /v1/proxy-ids); "
            "give each pod its own proxy id, or have an admin release it",
            "proxy-id-bound",
        )
        error.extra["proxy_ids"] = list(taken[:20])
        raise error


async def store_flows(conn: AsyncConnection, rows: list[dict[str, Any]]) -> int:
    """Insert flows (and their reason/category index rows) once per (shipper, decision id);
    return how many were new. A re-sent one is skipped (exactly once)."""
    if not rows:
        return 0
    flows = BlockedFlow.__table__
    stmt = (
        _insert(conn, flows)
        .on_conflict_do_nothing(index_elements=["token_id", "decision_id"])
        .returning(flows.c.token_id, flows.c.decision_id)
    )
    inserted = {tuple(r) for r in (await conn.execute(stmt, rows)).all()}
    new = [r for r in rows if (r["token_id"], r["decision_id"]) in inserted]
    reasons = [
        {
            "token_id": r["token_id"],
            "decision_id": r["decision_id"],
            "code": code,
            "time": r["time"],
        }
        for r in new
        for code in r["reason_codes"]
    ]
    categories = [
        {
            "token_id": r["token_id"],
            "decision_id": r["decision_id"],
            "category": cat,
            "time": r["time"],
        }
        for r in new
        for cat in r["categories"]
    ]
    if reasons:
        await conn.execute(_insert(conn, FlowReason.__table__).on_conflict_do_nothing(), reasons)
    if categories:
        await conn.execute(
            _insert(conn, FlowCategory.__table__).on_conflict_do_nothing(), categories
        )
    return len(new)


LEDGER_KEY = (
    "token_id",
    "proxy_id",
    "minute",
    "source_workload",
    "source_namespace",
    "recipient_id",
    "purpose",
    "category",
)


async def store_ledger(conn: AsyncConnection, rows: list[dict[str, Any]]) -> int:
    """Upsert ledger rows: a re-sent (shipper, proxy, minute, key) replaces its count, never
    adds, whichever token of the shipper's rotation lineage sends it."""
    if not rows:
        return 0
    # One statement may not touch the same key twice (PostgreSQL refuses): last row wins.
    unique = list({tuple(r[k] for k in LEDGER_KEY): r for r in rows}.values())
    stmt = _insert(conn, LedgerEntry.__table__)
    stmt = stmt.on_conflict_do_update(
        index_elements=list(LEDGER_KEY), set_={"count": stmt.excluded.count}
    )
    await conn.execute(stmt, unique)
    return len(unique)


class FactIn(BaseModel):
    """Calls of one minute with one set of policy facts (`proxy.ledger`, `"kind": "fact"`)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["fact"]
    minute: datetime
    source_workload: str = Field(default="", max_length=200)
    source_namespace: str = Field(default="", max_length=200)
    host: str = Field(default="", max_length=260)
    port: int = Field(default=0, ge=0, le=65535)
    recipient_id: str = Field(default="", max_length=63)
    purpose: str = Field(default="", max_length=64)
    categories: list[str] = Field(default_factory=list, max_length=64)
    scheme: str = Field(default="", max_length=8)
    inspected: bool = True
    tls_upstream: bool = True
    complete: bool = True
    verdict: Literal["allow", "deny"]
    reason_codes: list[str] = Field(default_factory=list, max_length=32)
    count: int = Field(ge=0, le=10**12)

    @field_validator("minute")
    @classmethod
    def _whole_minute(cls, value: datetime) -> datetime:
        return _aware(value).replace(second=0, microsecond=0)

    @field_validator("categories")
    @classmethod
    def _known_categories(cls, value: list[str]) -> list[str]:
        taxonomy = load_taxonomy()
        unknown = [c for c in value if not taxonomy.is_category(c)]
        if unknown:
            raise ValueError(f"unknown categories {unknown}")
        return sorted(set(value))

    @field_validator("reason_codes")
    @classmethod
    def _known_codes(cls, value: list[str]) -> list[str]:
        taxonomy = load_taxonomy()
        unknown = [c for c in value if not taxonomy.is_reason_code(c)]
        if unknown:
            raise ValueError(f"unknown reason codes {unknown}")
        return sorted(set(value))


def fact_row(fact: FactIn, proxy_id: str, shipper_id: int) -> dict[str, Any]:
    """A shipped fact as stored: sets joined, the fact hashed, with its shipper and minute."""
    row = fact.model_dump(exclude={"kind"})
    row["categories"] = ",".join(fact.categories)
    row["reason_codes"] = ",".join(fact.reason_codes)
    key = "\x1f".join(str(row[c]) for c in FACT_FIELDS)
    row["fact_key"] = hashlib.sha256(key.encode()).hexdigest()
    row["proxy_id"] = proxy_id
    row["token_id"] = shipper_id
    return row


async def store_facts(conn: AsyncConnection, rows: list[dict[str, Any]]) -> int:
    """Count shipped facts into their hour, each (shipper, proxy, minute, fact) once; return new.

    The journal insert decides what is new (a re-send is skipped by its primary key, also
    against a concurrent ingest); only new rows add their count to the hourly table.
    """
    if not rows:
        return 0
    shipped = DecisionFactShipped.__table__
    unique = {(r["token_id"], r["proxy_id"], r["minute"], r["fact_key"]): r for r in rows}
    stmt = (
        _insert(conn, shipped)
        .on_conflict_do_nothing()
        .returning(shipped.c.token_id, shipped.c.proxy_id, shipped.c.minute, shipped.c.fact_key)
    )
    journal = [{"token_id": t, "proxy_id": p, "minute": m, "fact_key": k} for t, p, m, k in unique]
    inserted = (await conn.execute(stmt, journal)).all()
    hours: dict[tuple[datetime, str], dict[str, Any]] = {}
    for token_id, proxy_id, minute, fact_key in inserted:
        row = unique[(token_id, proxy_id, _aware(minute), fact_key)]
        hour = row["minute"].replace(minute=0)
        held = hours.get((hour, fact_key))
        if held is None:
            hours[(hour, fact_key)] = {
                **{c: row[c] for c in FACT_FIELDS},
                "fact_key": fact_key,
                "hour": hour,
                "count": row["count"],
            }
        else:
            held["count"] += row["count"]
    if hours:
        facts = DecisionFact.__table__
        upsert = _insert(conn, facts)
        upsert = upsert.on_conflict_do_update(
            index_elements=["hour", "fact_key"],
            set_={"count": facts.c.count + upsert.excluded.count},
        )
        # In key order: proxies shipping the same facts at once then lock the shared hourly
        # rows in one order (in their own orders, two upserts deadlocked on PostgreSQL).
        await conn.execute(upsert, [hours[key] for key in sorted(hours)])
    return len(inserted)
