"""`/v1/audit`: the audit trail, newest first, filterable, in keyset pages."""

from __future__ import annotations

from aiohttp import web
from sqlmodel import select

from registry.errors import invalid_field
from registry.models import AuditEvent, as_utc
from registry.pagination import decode_cursor, page, parse_limit
from registry.query import parse_time

from . import keys
from .responses import AuditEventOut, AuditPage
from .routes import RouteTable

READERS = ("engineer", "security", "admin")
_TEXT_FILTERS = ("entity_type", "entity_id", "actor", "action", "scope", "token_name")

routes = RouteTable(tags=("audit",))


def event_out(event: AuditEvent) -> AuditEventOut:
    """An audit event as the API shows it."""
    return AuditEventOut(
        id=event.id,
        time=as_utc(event.time),
        actor=event.actor,
        token_name=event.token_name,
        action=event.action,
        entity_type=event.entity_type,
        entity_id=event.entity_id,
        scope=event.scope,
        note=event.note,
        before=event.before,
        after=event.after,
    )


def _is_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_TEXT = {"type": "string", "maxLength": 200}
_WHEN = {"type": "string", "format": "date-time"}


@routes.get(
    "/v1/audit",
    summary="The audit trail, newest first",
    roles=READERS,
    response=AuditPage,
    query={
        "entity_type": (_TEXT, "recipient, grant, token, flow, registry"),
        "entity_id": (_TEXT, "The entity's id"),
        "actor": (_TEXT, "The person (a token's owner)"),
        "token_name": (_TEXT, "The token used"),
        "scope": (_TEXT, "recipient:<id>: a recipient and its grants"),
        "action": (_TEXT, "e.g. recipient.approve"),
        "since": (_WHEN, "Events at or after (ISO 8601; naive means UTC)"),
        "until": (_WHEN, "Events before"),
        "limit": ({"type": "integer", "minimum": 1, "maximum": 1000}, "Page size"),
        "cursor": ({"type": "string"}, "`next_cursor` of the previous page"),
    },
)
async def list_audit(request: web.Request) -> AuditPage:
    query = request.query
    stmt = select(AuditEvent).order_by(AuditEvent.id.desc())
    for name in _TEXT_FILTERS:
        value = query.get(name)
        if value is not None:
            if len(value) > 200:
                raise invalid_field(name, "at most 200 characters")
            stmt = stmt.where(getattr(AuditEvent, name) == value)
    since, until = parse_time(query, "since"), parse_time(query, "until")
    if since is not None:
        stmt = stmt.where(AuditEvent.time >= since)
    if until is not None:
        stmt = stmt.where(AuditEvent.time < until)
    if query.get("cursor"):
        stmt = stmt.where(AuditEvent.id < decode_cursor(query["cursor"], _is_id))
    limit = parse_limit(query.get("limit"))
    async with keys.sessions(request)() as session:
        rows = list((await session.exec(stmt.limit(limit + 1))).all())
    kept, next_cursor = page(rows, limit, lambda e: e.id)
    return AuditPage(items=[event_out(e) for e in kept], next_cursor=next_cursor)
