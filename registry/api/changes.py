"""`GET /v1/changes`: every change awaiting approval, with its diff against what is live."""

from __future__ import annotations

from aiohttp import web

from registry import service

from . import keys, openapi
from .auth import require_role
from .bodies import json_response

READERS = ("engineer", "security", "admin")


async def list_changes(request: web.Request) -> web.Response:
    require_role(request, *READERS)
    async with keys.sessions(request)() as session:
        items = await service.list_pending_changes(session)
    for item in items:
        base = f"/v1/{item['entity_type']}s/{item['entity_id']}"
        item["links"] = {"self": base, "approve": f"{base}/approve", "reject": f"{base}/reject"}
    return json_response({"items": items})


_CHANGE = {
    "type": "object",
    "properties": {
        "entity_type": {"type": "string", "enum": ["recipient", "workload"]},
        "entity_id": {"type": "string"},
        "version": {
            "type": "integer",
            "description": 'Send as If-Match: "<version>" to approve exactly this change',
        },
        "status": {"type": "string"},
        "kind": {"type": "string", "enum": ["proposal", "update"]},
        "live": {"type": ["object", "null"], "description": "What the proxies enforce now"},
        "proposed": {"type": "object", "description": "What approving makes live"},
        "diff": {
            "type": "object",
            "description": "fields {name: [live, proposed]}, hosts {added, removed}, "
            "grants {added, removed, changed}",
        },
        "authors": {
            "type": "array",
            "items": {"type": "string"},
            "description": "People who authored it since the last approval: none of them "
            "may approve it (four eyes)",
        },
        "updated_by": {"type": "string"},
        "updated_at": {"type": "string", "format": "date-time"},
        "links": {"type": "object"},
    },
}


def add_routes(app: web.Application) -> None:
    """Register `GET /v1/changes`."""
    app.router.add_get("/v1/changes", list_changes)
    openapi.add_path(
        app,
        "/v1/changes",
        "get",
        summary="Changes awaiting approval (proposals and staged edits of live entries), "
        "each with its diff against live",
        roles=READERS,
        response={"type": "object", "properties": {"items": {"type": "array", "items": _CHANGE}}},
        tags=("recipients",),
    )
