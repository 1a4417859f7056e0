"""`POST /v1/decisions`: proxies ship blocked/would-block decisions and per-minute allowed counts.

Idempotent by design: a flow is keyed by its decision id (`ON CONFLICT DO NOTHING`), a ledger
row by (proxy, minute, source, recipient, purpose, category) and a re-send replaces its count.
A record that fails validation is reported back and skipped, so one bad record cannot block a
proxy's spool forever; a malformed envelope is refused as a whole.
"""

from __future__ import annotations

import zlib
from datetime import UTC, datetime
from functools import cache
from typing import Any

import sqlalchemy as sa
import structlog
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from registry.errors import ApiError
from registry.models import BlockedFlow, FlowCategory, FlowReason, LedgerEntry
from sharewall.decision_record import RecordError, Vocabulary, record_schema, validate_record
from sharewall.taxonomy import load_taxonomy

from . import keys, openapi
from .auth import require_role
from .bodies import json_response, parse_json, read_body, too_large, validation_problem

log = structlog.get_logger("registry.decisions")

MAX_RECORDS = 10_000
MAX_LEDGER_ROWS = 10_000
_GZIP_MAGIC = b"\x1f\x8b"
_Id = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


@cache
def _vocabulary() -> Vocabulary:
    taxonomy = load_taxonomy()
    return Vocabulary(taxonomy.is_reason_code, taxonomy.is_category)


def check_record(doc: Any) -> dict[str, Any]:
    """A shipped decision record, validated against the taxonomy (`RecordError` if it is bad)."""
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


class DecisionBatch(BaseModel):
    """The envelope a proxy posts (gzip JSON)."""

    model_config = ConfigDict(extra="forbid")

    proxy_id: str = Field(min_length=1, max_length=200)
    # Each item is checked on its own by `sharewall.decision_record.validate_record`.
    decisions: list[dict[str, Any]] = Field(
        default_factory=list,
        max_length=MAX_RECORDS,
        json_schema_extra={"items": record_schema()},
    )
    ledger: list[dict[str, Any]] = Field(default_factory=list, max_length=MAX_LEDGER_ROWS)


class DecisionsAccepted(BaseModel):
    """What the registry did with a batch."""

    accepted: int
    duplicates: int
    ledger: int
    rejected: list[dict[str, Any]]


# -- reading uploads ---------------------------------------------------------------------------


def gunzip_bounded(raw: bytes, limit: int) -> bytes:
    """Decompress a gzip body, refusing (413) more than `limit` bytes out (a gzip bomb)."""
    inflater = zlib.decompressobj(wbits=31)
    try:
        out = inflater.decompress(raw, limit + 1)
    except zlib.error:
        raise ApiError(400, "malformed-gzip", "Body is not valid gzip") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise too_large(limit)
    return out


async def read_upload(request: web.Request) -> Any:
    """Read a JSON upload, plain or gzip (by `Content-Encoding` or by its magic bytes), bounded.

    aiohttp inflates a `Content-Encoding: gzip` body while it streams, so the decompressed size
    is what `read_body` counts; a body that is itself gzip data is inflated here, bounded too.
    """
    limit = keys.settings(request).max_decompressed_bytes
    try:
        raw = await read_body(request, limit)
    except HttpProcessingError:
        raise ApiError(400, "malformed-gzip", "Body is not valid gzip") from None
    if raw[:2] == _GZIP_MAGIC:
        raw = gunzip_bounded(raw, limit)
    if not raw.strip():
        raise ApiError(400, "malformed-json", "Request body is not valid JSON", "empty body")
    return parse_json(raw)


# -- storing -----------------------------------------------------------------------------------


def _insert(conn: AsyncConnection, table: sa.Table) -> Any:
    """The dialect's INSERT, which has `on_conflict_do_nothing`/`_update` on both databases."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)


def flow_row(record: dict[str, Any], proxy_id: str) -> dict[str, Any]:
    """The `blocked_flow` row of a validated decision record (`validate_record`)."""
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
        "triage_state": "new",
    }


async def store_flows(conn: AsyncConnection, rows: list[dict[str, Any]]) -> int:
    """Insert flows (and their reason/category index rows) once; return how many were new."""
    if not rows:
        return 0
    flows = BlockedFlow.__table__
    stmt = (
        _insert(conn, flows)
        .on_conflict_do_nothing(index_elements=["decision_id"])
        .returning(flows.c.decision_id)
    )
    inserted = set((await conn.execute(stmt, rows)).scalars().all())
    if not inserted:
        return 0
    new = [r for r in rows if r["decision_id"] in inserted]
    reasons = [
        {"decision_id": r["decision_id"], "code": code, "time": r["time"]}
        for r in new
        for code in r["reason_codes"]
    ]
    categories = [
        {"decision_id": r["decision_id"], "category": cat, "time": r["time"]}
        for r in new
        for cat in r["categories"]
    ]
    if reasons:
        await conn.execute(_insert(conn, FlowReason.__table__).on_conflict_do_nothing(), reasons)
    if categories:
        await conn.execute(
            _insert(conn, FlowCategory.__table__).on_conflict_do_nothing(), categories
        )
    return len(inserted)


LEDGER_KEY = (
    "proxy_id",
    "minute",
    "source_workload",
    "source_namespace",
    "recipient_id",
    "purpose",
    "category",
)


async def store_ledger(conn: AsyncConnection, rows: list[dict[str, Any]]) -> int:
    """Upsert ledger rows: a re-sent (proxy, minute, key) replaces its count, never adds."""
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


def _rejection(index: int, doc: Any, exc: ValidationError) -> dict[str, Any]:
    err = exc.errors()[0]
    return {
        "index": index,
        "decision_id": doc.get("decision_id") if isinstance(doc, dict) else None,
        "field": ".".join(str(p) for p in err["loc"]),
        "message": err["msg"].removeprefix("Value error, "),
    }


async def post_decisions(request: web.Request) -> web.Response:
    """Store a proxy's batch: flows once each, ledger counts replaced; report rejects."""
    require_role(request, "proxy")
    try:
        batch = DecisionBatch.model_validate(await read_upload(request))
    except ValidationError as exc:
        raise validation_problem(exc) from None
    flows: dict[str, dict[str, Any]] = {}
    ledger: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    for index, doc in enumerate(batch.decisions):
        try:
            record = check_record(doc)
        except RecordError as exc:
            rejected.append(
                {
                    "index": index,
                    "decision_id": doc.get("decision_id") if isinstance(doc, dict) else None,
                    "field": exc.field,
                    "message": exc.message,
                }
            )
            continue
        flows.setdefault(record["decision_id"], flow_row(record, batch.proxy_id))
    for index, doc in enumerate(batch.ledger):
        try:
            row = LedgerIn.model_validate(doc)
        except ValidationError as exc:
            rejected.append({**_rejection(index, doc, exc), "ledger": True})
            continue
        ledger.append({**row.model_dump(), "proxy_id": batch.proxy_id})
    async with request.app[keys.ENGINE].begin() as conn:
        accepted = await store_flows(conn, list(flows.values()))
        ledger_rows = await store_ledger(conn, ledger)
    duplicates = len(batch.decisions) - len(rejected_decisions(rejected)) - accepted
    log.info(
        "decisions.ingested",
        proxy_id=batch.proxy_id,
        accepted=accepted,
        duplicates=duplicates,
        ledger=ledger_rows,
        rejected=len(rejected),
    )
    return json_response(
        DecisionsAccepted(
            accepted=accepted, duplicates=duplicates, ledger=ledger_rows, rejected=rejected[:100]
        )
    )


def rejected_decisions(rejected: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rejected if not r.get("ledger")]


def add_routes(app: web.Application) -> None:
    """Register `POST /v1/decisions`."""
    app.router.add_post("/v1/decisions", post_decisions)
    openapi.add_path(
        app,
        "/v1/decisions",
        "post",
        summary="Ship blocked/would-block decisions and per-minute allowed counts (gzip JSON)",
        roles=("proxy",),
        request=DecisionBatch,
        response=DecisionsAccepted,
        headers={"Content-Encoding": ({"type": "string", "enum": ["gzip"]}, "gzip body")},
        tags=("flows",),
    )
