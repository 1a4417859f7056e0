"""Unauthenticated service routes: the OpenAPI document and health checks."""

from __future__ import annotations

import sqlalchemy as sa
from aiohttp import web

from registry.errors import ApiError

from . import keys, openapi
from .bodies import json_response
from .responses import Status
from .routes import RouteTable

routes = RouteTable(tags=("meta",))


@routes.get("/openapi.json", summary="This OpenAPI document", response={"type": "object"})
async def get_openapi(request: web.Request) -> web.Response:
    return json_response(openapi.document(request.app))


@routes.get("/healthz", summary="Liveness", response=Status)
async def healthz(_request: web.Request) -> Status:
    return Status(status="ok")


@routes.get(
    "/readyz",
    summary="Readiness (database reachable)",
    response=Status,
    responses={503: "Database unreachable"},
)
async def readyz(request: web.Request) -> Status:
    try:
        async with request.app[keys.ENGINE].connect() as conn:
            await conn.execute(sa.text("SELECT 1"))
    except Exception as exc:  # any database fault means "not ready", never a 500
        raise ApiError(503, "not-ready", "Not ready", "database unreachable") from exc
    return Status(status="ready")
