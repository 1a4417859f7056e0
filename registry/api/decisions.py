"""`POST /v1/decisions`: proxies ship blocked/would-block decisions and per-minute allowed counts.

A record that fails validation is reported back and skipped, so one bad record cannot block a
proxy's spool forever; a malformed envelope is refused as a whole. Storage is `registry.ingest`.

What is stored is keyed by the caller's shipping identity (its token's rotation lineage), not
by the envelope's `proxy_id`: a proxy replaces only its own ledger counts, and a decision id
another proxy shipped too is a flow of its own. The `proxy_id` must be bound to the caller
(`registry.ingest.bind_proxy_ids`): another's is `403 proxy-id-bound`, nothing stored.
"""

from __future__ import annotations

from typing import Any

import structlog
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from registry.ingest import (
    FactIn,
    LedgerIn,
    bind_proxy_ids,
    check_record,
    fact_row,
    flow_row,
    store_facts,
    store_flows,
    store_ledger,
)
from sharewall.decision_record import RecordError, record_schema

from . import keys
from .bodies import read_upload, validation_problem
from .routes import RouteTable, caller

__all__ = [
    "LedgerIn",
    "check_record",
    "flow_row",
    "routes",
    "store_flows",
    "store_ledger",
]

log = structlog.get_logger("registry.decisions")

MAX_RECORDS = 10_000
MAX_LEDGER_ROWS = 10_000

routes = RouteTable(tags=("flows",))


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


def _rejection(index: int, doc: Any, exc: ValidationError) -> dict[str, Any]:
    err = exc.errors()[0]
    return {
        "index": index,
        "decision_id": doc.get("decision_id") if isinstance(doc, dict) else None,
        "field": ".".join(str(p) for p in err["loc"]),
        "message": err["msg"].removeprefix("Value error, "),
    }


@routes.post(
    "/v1/decisions",
    summary="Ship blocked/would-block decisions and per-minute allowed counts (gzip JSON)",
    roles=("proxy",),
    request=DecisionBatch,
    body="raw",
    response=DecisionsAccepted,
    headers={"Content-Encoding": ({"type": "string", "enum": ["gzip"]}, "gzip body")},
    responses={403: "Not a proxy token, or `proxy_id` is bound to another (proxy-id-bound)"},
)
async def post_decisions(request: web.Request) -> DecisionsAccepted:
    """Store a proxy's batch: flows once each, ledger counts replaced; report rejects."""
    principal = caller(request)
    token_id, shipper_id = principal.token_id, principal.shipper_id
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
        flows.setdefault(record["decision_id"], flow_row(record, batch.proxy_id, shipper_id))
    facts: list[dict[str, Any]] = []
    for index, doc in enumerate(batch.ledger):
        # Ledger rows count allowed calls per category; fact rows (`kind: fact`) count every
        # decided call per distinct policy fact, for the impact replay.
        is_fact = isinstance(doc, dict) and doc.get("kind") == "fact"
        try:
            if is_fact:
                facts.append(fact_row(FactIn.model_validate(doc), batch.proxy_id, shipper_id))
            else:
                row = LedgerIn.model_validate(doc)
                ledger.append(
                    {**row.model_dump(), "proxy_id": batch.proxy_id, "token_id": shipper_id}
                )
        except ValidationError as exc:
            rejected.append({**_rejection(index, doc, exc), "ledger": True})
    async with request.app[keys.ENGINE].begin() as conn:
        await bind_proxy_ids(conn, {batch.proxy_id}, shipper_id)
        accepted = await store_flows(conn, list(flows.values()))
        ledger_rows = await store_ledger(conn, ledger)
        fact_rows = await store_facts(conn, facts)
    duplicates = len(batch.decisions) - len(rejected_decisions(rejected)) - accepted
    log.info(
        "decisions.ingested",
        proxy_id=batch.proxy_id,
        token_id=token_id,
        shipper_id=shipper_id,
        accepted=accepted,
        duplicates=duplicates,
        ledger=ledger_rows,
        facts=fact_rows,
        rejected=len(rejected),
    )
    return DecisionsAccepted(
        accepted=accepted, duplicates=duplicates, ledger=ledger_rows, rejected=rejected[:100]
    )


def rejected_decisions(rejected: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rejected if not r.get("ledger")]
