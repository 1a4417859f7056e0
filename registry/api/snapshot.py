"""`GET /v1/snapshot`: the approved registry for proxies, ETag'd by version, with long polling."""

from __future__ import annotations

from aiohttp import web

from sharewall.snapshot import Snapshot

from . import keys
from .routes import RouteTable
from .snapshot_hub import SNAPSHOT_HUB, BuiltSnapshot, ensure_hub, etag_matches, hub, parse_wait

__all__ = ["SNAPSHOT_HUB", "routes"]

SNAPSHOT_ROLES = ("proxy", "security", "admin", "engineer")

routes = RouteTable(tags=("distribution",))
routes.on_setup(ensure_hub)


def _snapshot_response(request: web.Request, built: BuiltSnapshot) -> web.Response:
    headers = {"ETag": built.etag, "Cache-Control": "no-cache", "Vary": "Accept-Encoding"}
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        headers["Content-Encoding"] = "gzip"
        return web.Response(body=built.gzip_body, content_type="application/json", headers=headers)
    return web.Response(body=built.body, content_type="application/json", headers=headers)


@routes.get(
    "/v1/snapshot",
    summary="The approved registry for enforcement points (ETag = version, long poll)",
    roles=SNAPSHOT_ROLES,
    response=Snapshot,
    query={
        "wait": (
            {"type": "number", "minimum": 0, "maximum": 60},
            "With If-None-Match: hold up to this many seconds for a newer version, then 304",
        )
    },
    headers={"If-None-Match": ({"type": "string"}, 'The ETag held, e.g. "42"')},
    responses={304: "Not modified (the held version is current)"},
)
async def get_snapshot(request: web.Request) -> web.StreamResponse:
    """The snapshot; 304 when `If-None-Match` holds its ETag, after waiting up to `wait` seconds."""
    wait = parse_wait(request.query.get("wait"), keys.settings(request).max_wait_s)
    snapshots = hub(request.app)
    built = await snapshots.get()
    client_etag = request.headers.get("If-None-Match")
    if etag_matches(client_etag, built.etag):
        if wait > 0 and await snapshots.wait_for_change(built.version, wait):
            built = await snapshots.get()
        if etag_matches(client_etag, built.etag):
            return web.Response(status=304, headers={"ETag": built.etag})
    return _snapshot_response(request, built)
