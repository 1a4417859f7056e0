"""Blocked flows: `GET /v1/flows` (filters, cursor pages), `GET /v1/flows/{id}`, triage.

A flow is keyed by (shipper, decision id): a decision id two proxies shipped is two flows,
each with its `shipped_by`; `?shipped_by=<token_id>` picks one where the id alone is
ambiguous (409 `ambiguous-flow` lists the shippers). Pages are newest first and keyed on
(time, decision id, shipper), so a page never repeats or skips a flow while new ones arrive.
A reason or category filter drives the query from the `flow_reason`/`flow_category` index on
(code, time), one range scan in time order. Triage carries the flow's `version` as its ETag
(`If-Match` optional, as on the other reviewer actions; 412 when stale).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa
import structlog
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from registry import retention
from registry.audit import record_audit
from registry.errors import ApiError, not_found
from registry.models import (
    TRIAGE_STATES,
    BlockedFlow,
    FlowCategory,
    FlowReason,
    as_utc,
    utcnow,
)
from registry.pagination import MAX_LIMIT, decode_cursor, page, parse_limit
from registry.preconditions import check_version
from registry.query import parse_time, query_error
from registry.tokens import token_names
from sharewall.taxonomy import load_taxonomy

from . import keys
from .responses import FlowOut, FlowPage
from .routes import Reply, RouteTable, caller, if_match, request_body

log = structlog.get_logger("registry.flows")

READ_ROLES = ("security", "engineer")

routes = RouteTable(tags=("flows",))
routes.on_setup(lambda app: app.cleanup_ctx.append(retention.retention_ctx))

_FLOW = BlockedFlow.__table__
_REASON = FlowReason.__table__
_CATEGORY = FlowCategory.__table__


FLOW_QUERY = {
    "since": ({"type": "string", "format": "date-time"}, "Flows at or after this time"),
    "until": ({"type": "string", "format": "date-time"}, "Flows before this time"),
    "recipient_id": ({"type": "string"}, "Recipient id"),
    "reason": ({"type": "string"}, "Reason code (taxonomy); unknown → 422"),
    "category": ({"type": "string"}, "Data category id (taxonomy); unknown → 422"),
    "source": ({"type": "string"}, "Source workload"),
    "decision_id": ({"type": "string"}, "Decision id (one flow per shipper that shipped it)"),
    "triage_state": ({"type": "string", "enum": list(TRIAGE_STATES)}, "Triage state"),
    "kind": (
        {"type": "string", "enum": ["deny", "fault", "would_block"]},
        "fault: sharewall failed closed (503); deny: a policy denial; would_block: report mode",
    ),
    "limit": ({"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}, "Page size"),
    "cursor": ({"type": "string"}, "`next_cursor` of the previous page"),
}


def _cursor_key(row: Any) -> list[Any]:
    return [as_utc(row.time).isoformat(), row.decision_id, row.token_id]


def _is_flow_key(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 3
        and all(isinstance(v, str) for v in value[:2])
        and isinstance(value[2], int)
        and not isinstance(value[2], bool)
        and _parses_as_time(value[0])
    )


def _parses_as_time(text: str) -> bool:
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


FLOW_KINDS = ("deny", "fault", "would_block")


def flow_kind(row: Any) -> str:
    """`fault` (sharewall failed closed, 503), `would_block` (report mode) or `deny` (policy)."""
    if row.fault:
        return "fault"
    return "would_block" if row.would_block else "deny"


def reasons_out(row: Any) -> list[dict[str, Any]]:
    """Each reason with its taxonomy message and, where it has one, its category."""
    codes = load_taxonomy().reason_codes
    # Rows stored before reasons kept their category have only the codes.
    reasons = row.reasons or [{"code": c} for c in row.reason_codes or ()]
    return [
        {"code": r["code"], "message": codes.get(r["code"], ""), "category": r.get("category")}
        for r in reasons
    ]


def flow_out(row: Any, names: dict[int, str]) -> FlowOut:
    """The API form of a `blocked_flow` row (with reason messages from the taxonomy), `names`
    the shipping tokens' names (`registry.tokens.token_names`)."""
    shipped_by = (
        {"token_id": row.token_id, "token_name": names.get(row.token_id)}
        if row.token_id
        else None  # stored before migration 0008
    )
    return FlowOut.model_validate(
        {
            "decision_id": row.decision_id,
            "time": as_utc(row.time).isoformat(),
            "action": row.action,
            "would_block": row.would_block,
            "mode": row.mode,
            "kind": flow_kind(row),
            "fault": row.fault,
            "status": row.status,
            "recipient_id": row.recipient_id,
            "host": row.host,
            "method": row.method,
            "path": row.path,
            "purpose": row.purpose,
            "categories": list(row.categories or ()),
            "reasons": reasons_out(row),
            "source": {"workload": row.source_workload, "namespace": row.source_namespace},
            "findings": list(row.findings or ()),
            "latency_ms": row.latency_ms,
            "proxy_id": row.proxy_id,
            "shipped_by": shipped_by,
            "triage": _triage_image(row),
            "version": row.version,
        }
    )


def _same_flow(index: sa.Table) -> tuple[Any, Any]:
    """The join of an index table (`flow_reason`, `flow_category`) to its flow."""
    return (
        index.c.token_id == _FLOW.c.token_id,
        index.c.decision_id == _FLOW.c.decision_id,
    )


def build_flows_query(query: Any) -> tuple[sa.Select, int]:
    """The SELECT for `GET /v1/flows` from its query parameters (all values bound, never spliced)."""
    taxonomy = load_taxonomy()
    limit = parse_limit(query.get("limit"))
    since, until = parse_time(query, "since"), parse_time(query, "until")
    stmt = sa.select(_FLOW)
    time_col, id_col, shipper_col = _FLOW.c.time, _FLOW.c.decision_id, _FLOW.c.token_id
    reason = query.get("reason")
    if reason:
        if not taxonomy.is_reason_code(reason):
            raise query_error("reason", f"unknown reason code {reason!r}")
        stmt = stmt.join(_REASON, sa.and_(*_same_flow(_REASON), _REASON.c.code == reason))
        time_col, id_col, shipper_col = _REASON.c.time, _REASON.c.decision_id, _REASON.c.token_id
    category = query.get("category")
    if category:
        if not taxonomy.is_category(category):
            raise query_error("category", f"unknown category {category!r}")
        stmt = stmt.join(
            _CATEGORY, sa.and_(*_same_flow(_CATEGORY), _CATEGORY.c.category == category)
        )
        if not reason:
            time_col, id_col = _CATEGORY.c.time, _CATEGORY.c.decision_id
            shipper_col = _CATEGORY.c.token_id
    triage_state = query.get("triage_state")
    if triage_state:
        if triage_state not in TRIAGE_STATES:
            raise query_error("triage_state", f"expected one of {list(TRIAGE_STATES)}")
        stmt = stmt.where(_FLOW.c.triage_state == triage_state)
    kind = query.get("kind")
    if kind:
        if kind not in FLOW_KINDS:
            raise query_error("kind", f"expected one of {list(FLOW_KINDS)}")
        if kind == "fault":
            stmt = stmt.where(_FLOW.c.fault.is_not(None))
        else:
            stmt = stmt.where(
                _FLOW.c.fault.is_(None), _FLOW.c.would_block.is_(kind == "would_block")
            )
    if query.get("recipient_id"):
        stmt = stmt.where(_FLOW.c.recipient_id == query["recipient_id"])
    if query.get("source"):
        stmt = stmt.where(_FLOW.c.source_workload == query["source"])
    if query.get("decision_id"):
        stmt = stmt.where(_FLOW.c.decision_id == query["decision_id"])
    if since is not None:
        stmt = stmt.where(time_col >= since)
    if until is not None:
        stmt = stmt.where(time_col < until)
    if query.get("cursor"):
        after_text, after_id, after_shipper = decode_cursor(query["cursor"], _is_flow_key)
        after_time = datetime.fromisoformat(after_text)
        # Typed binds: SQLite compares stored times as text, so the cursor must render the same way.
        after = sa.tuple_(
            sa.literal(after_time, time_col.type),
            sa.literal(after_id, id_col.type),
            sa.literal(after_shipper, shipper_col.type),
        )
        stmt = stmt.where(sa.tuple_(time_col, id_col, shipper_col) < after)
    stmt = stmt.order_by(time_col.desc(), id_col.desc(), shipper_col.desc()).limit(limit + 1)
    return stmt, limit


@routes.get(
    "/v1/flows",
    summary="Blocked and would-block flows, newest first (cursor pages)",
    roles=READ_ROLES,
    query=FLOW_QUERY,
    response=FlowPage,
    responses={422: "Unknown reason/category/triage state or bad time/cursor"},
)
async def list_flows(request: web.Request) -> FlowPage:
    """Blocked and would-block flows, newest first, filtered, one page at a time."""
    stmt, limit = build_flows_query(request.query)
    async with request.app[keys.ENGINE].connect() as conn:
        rows = (await conn.execute(stmt)).all()
        kept, next_cursor = page(rows, limit, _cursor_key)
        names = await token_names(conn, {r.token_id for r in kept if r.token_id is not None})
    return FlowPage(flows=[flow_out(r, names) for r in kept], next_cursor=next_cursor)


_SHIPPED_BY = {
    "shipped_by": (
        {"type": "integer", "minimum": 0},
        "The shipper's `token_id` (`shipped_by.token_id`; 0: shipped before migration 0008), "
        "needed when the decision id was shipped by more than one",
    )
}
_ETAG = "The flow's version (\"<version>\"), for a triage's If-Match"
_AMBIGUOUS = "Several shippers shipped this decision id: name one with shipped_by (ambiguous-flow)"


def _shipped_by(request: web.Request) -> int | None:
    raw = request.query.get("shipped_by")
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or len(raw) > 18:
        raise query_error("shipped_by", "expected a token id (shipped_by.token_id)")
    return int(raw)


async def _load_flow(
    conn: Any, decision_id: str, shipped_by: int | None, *, for_update: bool = False
) -> Any:
    """The one flow of `decision_id` (of `shipped_by` when given): 404 when none, 409
    `ambiguous-flow` naming the shippers when several shipped it and none is named."""
    stmt = sa.select(_FLOW).where(_FLOW.c.decision_id == decision_id)
    if shipped_by is not None:
        stmt = stmt.where(_FLOW.c.token_id == shipped_by)
    if for_update:
        stmt = stmt.with_for_update()
    rows = (await conn.execute(stmt.order_by(_FLOW.c.token_id).limit(50))).all()
    if not rows:
        raise not_found("flow", decision_id)
    if len(rows) > 1:
        names = await token_names(conn, {r.token_id for r in rows})
        raise ApiError(
            409,
            "ambiguous-flow",
            "Ambiguous decision id",
            f"decision id {decision_id} was shipped by {len(rows)} shippers; "
            "name one with ?shipped_by=<token_id> (GET /v1/flows?decision_id= lists them)",
            {
                "shipped_by": [
                    {"token_id": r.token_id, "token_name": names.get(r.token_id)} for r in rows
                ]
            },
        )
    return rows[0]


@routes.get(
    "/v1/flows/{decision_id}",
    summary="One flow (ETag = its version)",
    roles=READ_ROLES,
    query=_SHIPPED_BY,
    response=FlowOut,
    responses={
        404: "No such flow",
        409: _AMBIGUOUS,
        422: "Bad shipped_by",
    },
    etag=_ETAG,
)
async def get_flow(request: web.Request) -> Reply:
    """One flow by decision id (and shipper, where two shipped the same id)."""
    shipped_by = _shipped_by(request)
    async with request.app[keys.ENGINE].connect() as conn:
        row = await _load_flow(conn, request.match_info["decision_id"], shipped_by)
        names = await token_names(conn, {row.token_id})
    return Reply(flow_out(row, names), etag=row.version)


class TriageIn(BaseModel):
    """A reviewer's triage of a blocked flow."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    state: Literal["new", "acknowledged", "false_positive", "escalated"]
    note: str | None = Field(default=None, max_length=4000)


def _triage_image(row: Any) -> dict[str, Any]:
    return {
        "state": row.triage_state,
        "note": row.triage_note,
        "by": row.triaged_by,
        "at": as_utc(row.triaged_at).isoformat() if row.triaged_at else None,
    }


@routes.post(
    "/v1/flows/{decision_id}/triage",
    summary="Triage a flow (state, note); audited; If-Match optional (ETag = its version)",
    roles=("security",),
    request=TriageIn,
    query=_SHIPPED_BY,
    headers={"If-Match": ({"type": "string"}, 'The flow\'s ETag ("<version>"); 412 if stale')},
    response=FlowOut,
    responses={
        404: "No such flow",
        409: _AMBIGUOUS,
        422: "Bad body or shipped_by",
    },
    etag=_ETAG,
)
async def triage_flow(request: web.Request) -> Reply:
    """Set a flow's triage state and note (security only), with an audit event."""
    principal = caller(request)
    body = request_body(request, TriageIn)
    expected = if_match(request)
    shipped_by = _shipped_by(request)
    decision_id = request.match_info["decision_id"]
    async with keys.transaction(request) as session:
        conn = await session.connection()
        before = await _load_flow(conn, decision_id, shipped_by, for_update=True)
        check_version(expected, before.version, f"flow {decision_id}")
        key = sa.and_(_FLOW.c.token_id == before.token_id, _FLOW.c.decision_id == decision_id)
        await conn.execute(
            sa.update(_FLOW)
            .where(key)
            .values(
                triage_state=body.state,
                triage_note=body.note,
                triaged_by=principal.owner,
                triaged_at=utcnow(),
                version=_FLOW.c.version + 1,
            )
        )
        after = (await conn.execute(sa.select(_FLOW).where(key))).one()
        names = await token_names(conn, {after.token_id})
        record_audit(
            session,
            principal.actor(),
            "flow.triage",
            "flow",
            decision_id,
            before={**_triage_image(before), "shipped_by": before.token_id},
            after={**_triage_image(after), "shipped_by": after.token_id},
        )
    log.info("flow.triaged", decision_id=decision_id, shipper_id=after.token_id, state=body.state)
    return Reply(flow_out(after, names), etag=after.version)
