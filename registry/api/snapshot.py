"""`GET /v1/snapshot`: the approved registry for proxies, ETag'd by version, with long polling."""

from __future__ import annotations

from aiohttp import web

from sharewall.snapshot import Snapshot
from sharewall.snapshot_delta import DELTA_MEDIA_TYPE

from . import keys
from .routes import RouteTable
from .snapshot_hub import SNAPSHOT_HUB, BuiltSnapshot, ensure_hub, etag_matches, hub, parse_wait

__all__ = ["SNAPSHOT_HUB", "routes"]

SNAPSHOT_ROLES = ("proxy", "security", "admin", "engineer")

routes = RouteTable(tags=("distribution",))
routes.on_setup(ensure_hub)


def _held_version(etag: str | None) -> int | None:
    """The version a follower's `If-None-Match` names ("41" → 41), if it is one of ours."""
    if not etag:
        return None
    tag = etag.strip().removeprefix("W/")
    if len(tag) < 3 or tag[0] != '"' or tag[-1] != '"' or not tag[1:-1].isdigit():
        return None
    return int(tag[1:-1])


async def _snapshot_response(request: web.Request, built: BuiltSnapshot) -> web.Response:
    headers = {"ETag": built.etag, "Cache-Control": "no-cache", "Vary": "Accept, Accept-Encoding"}
    held = _held_version(request.headers.get("If-None-Match"))
    if held is not None and DELTA_MEDIA_TYPE in request.headers.get("Accept", ""):
        # A follower holding `held` gets what changed since (small: never gzip'd).
        delta = hub(request.app).delta(built, held)
        if delta is not None:
            return web.Response(body=delta, content_type=DELTA_MEDIA_TYPE, headers=headers)
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        headers["Content-Encoding"] = "gzip"
        body = await built.gzip_body()
        return web.Response(body=body, content_type="application/json", headers=headers)
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
    headers={
        "If-None-Match": ({"type": "string"}, 'The ETag held, e.g. "42"'),
        "Accept": (
            {"type": "string"},
            f"With {DELTA_MEDIA_TYPE}: answer a follower holding a recent version with what "
            "changed since (falls back to the full snapshot)",
        ),
    },
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
    return await _snapshot_response(request, built)
