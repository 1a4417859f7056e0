"""`create_app(settings)`: the registry's aiohttp application, wired in one place."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from registry import db
from registry.settings import Settings
from registry.throttle import FailureThrottle

from . import auth, keys, openapi
from .middleware import error_middleware, request_context_middleware

log = structlog.get_logger("registry.app")

# Each module exposes `add_routes(app)`. Modules not written yet are skipped (see below).
ROUTE_MODULES: tuple[str, ...] = (
    "registry.api.meta",
    "registry.api.recipients",
    "registry.api.changes",
    "registry.api.tokens",
    "registry.api.audit",
    "registry.api.apply",
    "registry.api.snapshot",
    "registry.api.bundles",
    "registry.api.decisions",
    "registry.api.flows",
    "registry.api.ledger",
    "registry.api.logs",
)


async def _database(app: web.Application) -> AsyncIterator[None]:
    """Own the database engine for the app's lifetime."""
    settings = app[keys.SETTINGS]
    engine = db.create_engine(settings.db_url)
    app[keys.ENGINE] = engine
    app[keys.SESSIONS] = db.create_sessionmaker(engine)
    log.info("registry.database_open", dialect=engine.dialect.name)
    try:
        yield
    finally:
        await engine.dispose()


def _add_route_modules(app: web.Application) -> list[str]:
    added = []
    for name in ROUTE_MODULES:
        # Modules are written in parallel by several people: a missing one is skipped, but one
        # that exists and fails to import is a bug and must fail loudly.
        if importlib.util.find_spec(name) is None:
            continue
        importlib.import_module(name).add_routes(app)
        added.append(name.rsplit(".", 1)[-1])
    return added


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
    app[keys.SIGN_IN_THROTTLE] = FailureThrottle(
        settings.sign_in_failures, settings.sign_in_window_s
    )
    app.cleanup_ctx.append(_database)
    modules = _add_route_modules(app)
    log.debug("registry.routes", modules=modules)
    return app
