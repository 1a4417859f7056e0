"""`/v1/proxy-ids`: which shipper each proxy id is bound to, and an admin's release of one.

A proxy id is bound to the shipping identity that first shipped as it
(`registry.ingest.bind_proxy_ids`); any other proxy token naming it is refused with
`403 proxy-id-bound`. A pod that gets a new (not rotated) token keeps its proxy id only once
an admin releases the old binding; the next shipper to use it is then bound. The retention job
releases bindings unused for `Settings.proxy_id_idle_days` (`registry.retention`).
"""

from __future__ import annotations

import sqlalchemy as sa
from aiohttp import web

from registry.audit import record_audit
from registry.errors import not_found
from registry.models import ProxyBinding, as_utc
from registry.pagination import MAX_LIMIT, decode_cursor, page, parse_limit
from registry.query import query_error
from registry.tokens import token_names

from . import keys
from .responses import ProxyIdList, ProxyIdOut, ShipperOut
from .routes import Reply, RouteTable, caller

routes = RouteTable(tags=("tokens",))

_BINDING = ProxyBinding.__table__


def _binding_out(row: object, names: dict[int, str]) -> ProxyIdOut:
    token_id = row.token_id  # type: ignore[attr-defined]
    return ProxyIdOut(
        proxy_id=row.proxy_id,  # type: ignore[attr-defined]
        shipped_by=ShipperOut(token_id=token_id, token_name=names.get(token_id)),
        bound_at=as_utc(row.bound_at),  # type: ignore[attr-defined]
        used_at=as_utc(row.used_at),  # type: ignore[attr-defined]
    )


@routes.get(
    "/v1/proxy-ids",
    summary="Proxy ids and the shipper (token identity) each is bound to",
    roles=("security", "admin"),
    query={
        "token_id": ({"type": "integer"}, "Only the proxy ids of this shipping identity"),
        "limit": ({"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}, "Page size"),
        "cursor": ({"type": "string"}, "`next_cursor` of the previous page"),
    },
    response=ProxyIdList,
    responses={422: "Bad token_id, limit or cursor"},
)
async def list_proxy_ids(request: web.Request) -> ProxyIdList:
    """Bindings in proxy id order, one page at a time."""
    limit = parse_limit(request.query.get("limit"))
    stmt = sa.select(_BINDING)
    raw_token = request.query.get("token_id")
    if raw_token:
        if not raw_token.isdigit() or len(raw_token) > 18:
            raise query_error("token_id", "expected a token id")
        stmt = stmt.where(_BINDING.c.token_id == int(raw_token))
    if request.query.get("cursor"):
        after = decode_cursor(request.query["cursor"], lambda v: isinstance(v, str))
        stmt = stmt.where(_BINDING.c.proxy_id > after)
    stmt = stmt.order_by(_BINDING.c.proxy_id).limit(limit + 1)
    async with request.app[keys.ENGINE].connect() as conn:
        rows = (await conn.execute(stmt)).all()
        kept, next_cursor = page(rows, limit, lambda r: r.proxy_id)
        names = await token_names(conn, {r.token_id for r in kept})
    return ProxyIdList(items=[_binding_out(r, names) for r in kept], next_cursor=next_cursor)


@routes.delete(
    "/v1/proxy-ids/{proxy_id}",
    summary="Release a proxy id (audited): the next shipper to use it is bound to it",
    roles=("admin",),
    status=204,
    responses={404: "No binding of that proxy id"},
)
async def release_proxy_id(request: web.Request) -> Reply:
    """Delete a binding, e.g. for a pod whose new token is not a rotation of its old one."""
    proxy_id = request.match_info["proxy_id"]
    async with keys.transaction(request) as session:
        conn = await session.connection()
        row = (
            await conn.execute(sa.select(_BINDING).where(_BINDING.c.proxy_id == proxy_id))
        ).first()
        if row is None:
            raise not_found("proxy id binding", proxy_id[:200])
        await conn.execute(sa.delete(_BINDING).where(_BINDING.c.proxy_id == proxy_id))
        record_audit(
            session,
            caller(request).actor(),
            "proxy_id.release",
            "proxy_id",
            proxy_id,
            before={
                "token_id": row.token_id,
                "bound_at": as_utc(row.bound_at).isoformat(),
                "used_at": as_utc(row.used_at).isoformat(),
            },
        )
    return Reply()
