"""`/v1/audit`: the audit trail, newest first, filterable, in keyset pages."""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web
from sqlmodel import select

from registry.errors import ApiError, invalid_field
from registry.models import AuditEvent, as_utc
from registry.pagination import decode_cursor, encode_cursor, parse_limit

from . import keys, openapi
from .auth import require_role
from .bodies import json_response

READERS = ("engineer", "security", "admin")
_TEXT_FILTERS = ("entity_type", "entity_id", "actor", "action", "scope", "token_name")


def parse_time(field: str, raw: str) -> datetime:
    """An ISO 8601 query parameter as aware UTC (naive means UTC); 422 naming the field."""
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise invalid_field(field, "expected an ISO 8601 date-time") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def event_view(event: AuditEvent) -> dict:
    """An audit event as the API shows it."""
    return {
        "id": event.id,
        "time": as_utc(event.time),
        "actor": event.actor,
        "token_name": event.token_name,
        "action": event.action,
        "entity_type": event.entity_type,
        "entity_id": event.entity_id,
        "scope": event.scope,
        "note": event.note,
        "before": event.before,
        "after": event.after,
    }


async def list_audit(request: web.Request) -> web.Response:
    require_role(request, *READERS)
    query = request.query
    stmt = select(AuditEvent).order_by(AuditEvent.id.desc())
    for name in _TEXT_FILTERS:
        value = query.get(name)
        if value is not None:
            if len(value) > 200:
                raise invalid_field(name, "at most 200 characters")
            stmt = stmt.where(getattr(AuditEvent, name) == value)
    if query.get("since"):
        stmt = stmt.where(AuditEvent.time >= parse_time("since", query["since"]))
    if query.get("until"):
        stmt = stmt.where(AuditEvent.time < parse_time("until", query["until"]))
    if query.get("cursor"):
        last_id = decode_cursor(query["cursor"])
        if not isinstance(last_id, int) or isinstance(last_id, bool):
            raise ApiError(400, "bad-cursor", "Invalid cursor", "pass back a cursor unchanged")
        stmt = stmt.where(AuditEvent.id < last_id)
    limit = parse_limit(query.get("limit"))
    async with keys.sessions(request)() as session:
        rows = list((await session.exec(stmt.limit(limit))).all())
    next_cursor = encode_cursor(rows[-1].id) if len(rows) == limit else None
    return json_response({"items": [event_view(e) for e in rows], "next_cursor": next_cursor})


def add_routes(app: web.Application) -> None:
    """Register `/v1/audit`."""
    app.router.add_get("/v1/audit", list_audit)
    event = {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "time": {"type": "string", "format": "date-time"},
            "actor": {"type": "string", "description": "The person (the token's owner)"},
            "token_name": {"type": ["string", "null"], "description": "The token used"},
            "action": {"type": "string", "description": "e.g. recipient.approve"},
            "entity_type": {"type": "string"},
            "entity_id": {"type": "string"},
            "scope": {
                "type": ["string", "null"],
                "description": "The reviewed entity it belongs to (recipient:<id>)",
            },
            "note": {"type": ["string", "null"], "description": "A reviewer's note"},
            "before": {"type": ["object", "null"]},
            "after": {"type": ["object", "null"]},
        },
    }
    text = {"type": "string", "maxLength": 200}
    when = {"type": "string", "format": "date-time"}
    openapi.add_path(
        app,
        "/v1/audit",
        "get",
        summary="The audit trail, newest first",
        roles=READERS,
        response={
            "type": "object",
            "properties": {
                "items": {"type": "array", "items": event},
                "next_cursor": {"type": ["string", "null"]},
            },
        },
        query={
            "entity_type": (text, "recipient, grant, token, flow, registry"),
            "entity_id": (text, "The entity's id"),
            "actor": (text, "The person (a token's owner)"),
            "token_name": (text, "The token used"),
            "scope": (text, "recipient:<id>: a recipient and its grants"),
            "action": (text, "e.g. recipient.approve"),
            "since": (when, "Events at or after (ISO 8601; naive means UTC)"),
            "until": (when, "Events before"),
            "limit": ({"type": "integer", "minimum": 1, "maximum": 1000}, "Page size"),
            "cursor": ({"type": "string"}, "`next_cursor` of the previous page"),
        },
        tags=("audit",),
    )
