"""`create_app(settings)`: the registry's aiohttp application, wired in one place."""

from __future__ import annotations

from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from registry import console, db
from registry.settings import Settings
from registry.throttle import FailureThrottle

from . import (
    apply,
    audit,
    auth,
    bundles,
    changes,
    datamap,
    decisions,
    flows,
    impact,
    keys,
    ledger,
    logs,
    meta,
    openapi,
    proxy_ids,
    recipients,
    snapshot,
    tokens,
    workloads,
)
from .middleware import error_middleware, request_context_middleware
from .routes import RouteTable, install

log = structlog.get_logger("registry.app")

# Every route table of the API, imported by name: a missing or misspelt module is an
# ImportError at start, never a silently absent feature.
ROUTE_TABLES: tuple[RouteTable, ...] = (
    meta.routes,
    recipients.routes,
    changes.routes,
    workloads.routes,
    tokens.routes,
    audit.routes,
    apply.routes,
    snapshot.routes,
    bundles.routes,
    decisions.routes,
    flows.routes,
    ledger.routes,
    logs.routes,
    proxy_ids.routes,
    impact.routes,
    datamap.routes,
)


async def _database(app: web.Application) -> AsyncIterator[None]:
    """Own the database engine for the app's lifetime."""
    settings = app[keys.SETTINGS]
    engine = db.create_engine(settings.db_url, lock_timeout_s=settings.lock_timeout_s)
    app[keys.ENGINE] = engine
    app[keys.SESSIONS] = db.create_sessionmaker(engine)
    log.info("registry.database_open", dialect=engine.dialect.name)
    try:
        yield
    finally:
        await engine.dispose()


def create_app(settings: Settings | None = None) -> web.Application:
    """Build the registry application; the database is opened on startup (cleanup_ctx)."""
    settings = settings or Settings()
    app = web.Application(
        middlewares=[request_context_middleware, error_middleware, auth.auth_middleware],
        client_max_size=settings.max_upload_bytes,
        # Bodies are inflated by `bodies.read_body` only, after authentication and routing,
        # streamed with a cap (aiohttp would inflate every gzip body as it arrives, even one
        # sent to an unknown path without a token).
        handler_args={"auto_decompress": False},
    )
    app[keys.SETTINGS] = settings
    app[keys.OPENAPI] = openapi.new_document()
    app[keys.SNAPSHOT_LISTENERS] = []
    app[keys.TOKEN_CACHE] = {}
    app[auth.LIVE_TOKENS] = auth.LiveTokenHashes(settings.token_cache_ttl_s)
    app[auth.DEPRECATED_USE_LOGGED] = {}
    app.on_response_prepare.append(auth.announce_expiry)
    app[keys.SIGN_IN_THROTTLE] = FailureThrottle(
        settings.sign_in_failures, settings.sign_in_window_s
    )
    app.cleanup_ctx.append(_database)
    app.cleanup_ctx.append(auth.finish_last_used_writes)
    for table in ROUTE_TABLES:
        install(app, table)
    console.install(app)
    return app
