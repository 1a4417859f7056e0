"""`GET /v1/ledger`: what categories went to which recipient, for which purpose, from which source.

Sums of the per-minute allowed counts proxies ship, grouped by the dimensions asked for;
`group_by=shipper` names which token (and the proxy id it gave) shipped each sum.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from aiohttp import web

from registry.models import LedgerEntry, as_utc
from registry.query import parse_time, query_error
from registry.tokens import token_names
from sharewall.taxonomy import load_taxonomy

from . import keys
from .responses import LedgerGroup, LedgerOut
from .routes import RouteTable

READ_ROLES = ("security", "engineer")
_LEDGER = LedgerEntry.__table__
# API name → column; `source` is the workload and namespace together.
DIMENSIONS: dict[str, tuple[str, ...]] = {
    "recipient_id": ("recipient_id",),
    "purpose": ("purpose",),
    "category": ("category",),
    "source": ("source_workload", "source_namespace"),
    # The shipping identity (a token's rotation lineage; 0: rows stored before migration 0008)
    # and the proxy id it gave.
    "shipper": ("token_id", "proxy_id"),
}
DEFAULT_GROUP_BY = ("recipient_id", "purpose", "category", "source")
MAX_GROUPS = 10_000

routes = RouteTable(tags=("flows",))


def parse_group_by(raw: str | None) -> list[str]:
    """`group_by=recipient_id,category` (default: all but shipper); 422 on an unknown one."""
    if not raw:
        return list(DEFAULT_GROUP_BY)
    names = [n.strip() for n in raw.split(",") if n.strip()]
    unknown = [n for n in names if n not in DIMENSIONS]
    if unknown or not names:
        raise query_error("group_by", f"expected a comma list of {list(DIMENSIONS)}")
    return list(dict.fromkeys(names))


def build_ledger_query(query: Any) -> tuple[sa.Select, list[str]]:
    """The grouped SELECT for `GET /v1/ledger` (values bound, never spliced)."""
    taxonomy = load_taxonomy()
    group_by = parse_group_by(query.get("group_by"))
    columns = [_LEDGER.c[col] for name in group_by for col in DIMENSIONS[name]]
    total = sa.func.sum(_LEDGER.c.count).label("count")
    stmt = sa.select(*columns, total, sa.func.min(_LEDGER.c.minute).label("first_minute"))
    stmt = stmt.add_columns(sa.func.max(_LEDGER.c.minute).label("last_minute"))
    since, until = parse_time(query, "since"), parse_time(query, "until")
    if since is not None:
        stmt = stmt.where(_LEDGER.c.minute >= since)
    if until is not None:
        stmt = stmt.where(_LEDGER.c.minute < until)
    if query.get("recipient_id"):
        stmt = stmt.where(_LEDGER.c.recipient_id == query["recipient_id"])
    if query.get("source"):
        stmt = stmt.where(_LEDGER.c.source_workload == query["source"])
    purpose = query.get("purpose")
    if purpose:
        if not taxonomy.is_purpose(purpose):
            raise query_error("purpose", f"unknown purpose {purpose!r}")
        stmt = stmt.where(_LEDGER.c.purpose == purpose)
    category = query.get("category")
    if category:
        if not taxonomy.is_category(category):
            raise query_error("category", f"unknown category {category!r}")
        stmt = stmt.where(_LEDGER.c.category == category)
    stmt = stmt.group_by(*columns).order_by(total.desc(), *columns).limit(MAX_GROUPS)
    return stmt, group_by


def _group(row: Any, group_by: list[str], names: dict[int, str]) -> LedgerGroup:
    out: dict[str, Any] = {}
    for name in group_by:
        if name == "source":
            out["source"] = {"workload": row.source_workload, "namespace": row.source_namespace}
        elif name == "shipper":
            out["shipper"] = {
                "token_id": row.token_id,
                "token_name": names.get(row.token_id),
                "proxy_id": row.proxy_id,
            }
        else:
            out[name] = getattr(row, name)
    return LedgerGroup(
        **out,
        count=int(row.count),
        first_minute=as_utc(row.first_minute),
        last_minute=as_utc(row.last_minute),
    )


@routes.get(
    "/v1/ledger",
    summary="Allowed calls summed by recipient, purpose, category and source",
    roles=READ_ROLES,
    response=LedgerOut,
    query={
        "since": ({"type": "string", "format": "date-time"}, "Minutes at or after this time"),
        "until": ({"type": "string", "format": "date-time"}, "Minutes before this time"),
        "recipient_id": ({"type": "string"}, "Recipient id"),
        "source": ({"type": "string"}, "Source workload"),
        "purpose": ({"type": "string"}, "Purpose id (taxonomy); unknown → 422"),
        "category": ({"type": "string"}, "Category id (taxonomy); unknown → 422"),
        "group_by": (
            {"type": "string"},
            "Comma list of recipient_id, purpose, category, source, shipper"
            " (default: all but shipper)",
        ),
    },
    responses={422: "Unknown purpose/category/dimension or bad time"},
)
async def get_ledger(request: web.Request) -> LedgerOut:
    """Grouped sums of allowed calls over a time range."""
    stmt, group_by = build_ledger_query(request.query)
    async with request.app[keys.ENGINE].connect() as conn:
        rows = (await conn.execute(stmt)).all()
        names = await token_names(
            conn, {r.token_id for r in rows} if "shipper" in group_by else set()
        )
    groups = [_group(r, group_by, names) for r in rows]
    return LedgerOut(group_by=group_by, groups=groups, total=sum(g.count for g in groups))
