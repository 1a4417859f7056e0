"""`GET /v1/bundles/sharewall.tar.gz`: the OPA bundle for OPA sidecars, with OPA's long polling.

OPA's bundle downloader sends `If-None-Match` with the ETag it holds and, when configured for
long polling, `Prefer: wait=<seconds>`; a server that supports it answers with
`Content-Type: application/vnd.openpolicyagent.bundles` (also on the 304 after a timeout), and
OPA keeps long polling.
"""

from __future__ import annotations

import asyncio
import re

from aiohttp import web

from registry.bundle import build_bundle_from_data, bundle_etag
from sharewall.snapshot import policy_data_of

from . import keys
from .routes import RouteTable
from .snapshot_hub import BuiltSnapshot, ensure_hub, etag_matches, hub, parse_wait

BUNDLE_ROLES = ("proxy", "admin", "security")
BUNDLE_PATH = "/v1/bundles/sharewall.tar.gz"
GZIP_TYPE = "application/gzip"
LONG_POLL_TYPE = "application/vnd.openpolicyagent.bundles"
_PREFER_WAIT_RE = re.compile(r"(?:^|[,;\s])wait\s*=\s*([^,;\s]+)", re.IGNORECASE)

_BUNDLE_LOCK = web.AppKey("bundle_lock", asyncio.Lock)

routes = RouteTable(tags=("distribution",))
routes.on_setup(ensure_hub)


@routes.on_setup
def _bundle_lock(app: web.Application) -> None:
    app[_BUNDLE_LOCK] = asyncio.Lock()


def bundle_revision(built: BuiltSnapshot) -> str:
    """The manifest revision: the snapshot version and its content hash."""
    return f"{built.version}-{built.revision}"


async def bundle_of(app: web.Application, built: BuiltSnapshot) -> tuple[bytes, str]:
    """The bundle bytes and ETag of a built snapshot, made once (off the event loop)."""
    if built.bundle is None:
        async with app[_BUNDLE_LOCK]:
            if built.bundle is None:
                body = await asyncio.to_thread(
                    build_bundle_from_data,
                    policy_data_of(built.document),
                    revision=bundle_revision(built),
                )
                built.bundle = (body, bundle_etag(body))
    return built.bundle


def prefer_wait(header: str | None) -> str | None:
    """The `wait` preference of a `Prefer` header (RFC 7240), as sent by OPA's long polling."""
    if not header:
        return None
    match = _PREFER_WAIT_RE.search(header)
    return match.group(1) if match else None


@routes.get(
    BUNDLE_PATH,
    summary="OPA bundle (manifest, registry data, taxonomy, policies); OPA long polling",
    roles=BUNDLE_ROLES,
    response={"type": "string", "format": "binary"},
    response_content_type=GZIP_TYPE,
    headers={
        "If-None-Match": ({"type": "string"}, "The bundle ETag held"),
        "Prefer": ({"type": "string"}, "wait=N: hold up to N seconds for a new bundle"),
    },
    responses={304: "Not modified"},
)
async def get_bundle(request: web.Request) -> web.StreamResponse:
    """The bundle; 304 on a matching `If-None-Match`, held up to `Prefer: wait=N` for a change."""
    raw_wait = prefer_wait(request.headers.get("Prefer"))
    long_poll = raw_wait is not None
    wait = parse_wait(raw_wait, keys.settings(request).max_wait_s, field_name="Prefer: wait")
    snapshots = hub(request.app)
    built = await snapshots.get()
    body, etag = await bundle_of(request.app, built)
    client_etag = request.headers.get("If-None-Match")
    content_type = LONG_POLL_TYPE if long_poll else GZIP_TYPE
    if etag_matches(client_etag, etag):
        if wait > 0 and await snapshots.wait_for_change(built.version, wait):
            built = await snapshots.get()
            body, etag = await bundle_of(request.app, built)
        if etag_matches(client_etag, etag):
            return web.Response(status=304, headers={"ETag": etag, "Content-Type": content_type})
    return web.Response(
        body=body, headers={"ETag": etag, "Content-Type": content_type, "Cache-Control": "no-cache"}
    )
