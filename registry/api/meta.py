"""Unauthenticated service routes: the OpenAPI document and health checks."""

from __future__ import annotations

import sqlalchemy as sa
from aiohttp import web

from registry.errors import ApiError

from . import keys, openapi
from .bodies import json_response


async def get_openapi(request: web.Request) -> web.Response:
    return json_response(openapi.document(request.app))


async def healthz(_request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    try:
        async with request.app[keys.ENGINE].connect() as conn:
            await conn.execute(sa.text("SELECT 1"))
    except Exception as exc:  # any database fault means "not ready", never a 500
        raise ApiError(503, "not-ready", "Not ready", "database unreachable") from exc
    return json_response({"status": "ready"})


def add_routes(app: web.Application) -> None:
    """Register `/openapi.json`, `/healthz`, `/readyz`."""
    app.router.add_get("/openapi.json", get_openapi)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    openapi.add_path(app, "/openapi.json", "get", summary="This OpenAPI document", tags=("meta",))
    openapi.add_path(app, "/healthz", "get", summary="Liveness", tags=("meta",))
    openapi.add_path(
        app,
        "/readyz",
        "get",
        summary="Readiness (database reachable)",
        responses={503: "Database unreachable"},
        tags=("meta",),
    )
