"""`/v1/tokens`: API tokens, managed by admins (the secret is returned once, at creation)."""

from __future__ import annotations

from aiohttp import web

from registry import tokens
from registry.errors import ApiError
from registry.models import ROLES
from registry.payloads import TokenCreate

from . import keys, openapi
from .auth import forget_token, require_role
from .bodies import json_response, read_json

ADMINS = ("admin",)
TAG = ("tokens",)


async def create_token(request: web.Request) -> web.Response:
    principal = require_role(request, *ADMINS)
    body = await read_json(request, TokenCreate)
    async with keys.transaction(request) as session:
        token, secret = await tokens.create_token(
            session,
            name=body.name,
            role=body.role,
            owner=body.owner,
            actor=principal.owner,
            actor_token=principal.name,
        )
    return json_response({**tokens.token_view(token), "secret": secret}, status=201)


async def list_tokens(request: web.Request) -> web.Response:
    require_role(request, *ADMINS)
    async with keys.sessions(request)() as session:
        rows = await tokens.list_tokens(session)
    return json_response({"items": [tokens.token_view(t) for t in rows]})


async def revoke_token(request: web.Request) -> web.Response:
    principal = require_role(request, *ADMINS)
    raw = request.match_info["token_id"]
    if not raw.isdigit() or len(raw) > 18:
        raise ApiError(404, "not-found", "Not found", f"no token {raw[:40]}")
    async with keys.transaction(request) as session:
        token = await tokens.revoke_token(
            session, int(raw), actor=principal.owner, actor_token=principal.name
        )
    forget_token(request.app, token.token_hash)
    return web.Response(status=204)


_TOKEN = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "name": {"type": "string"},
        "owner": {"type": "string", "description": "The person holding it (four eyes)"},
        "role": {"type": "string", "enum": list(ROLES)},
        "created_at": {"type": "string", "format": "date-time"},
        "last_used_at": {"type": ["string", "null"], "format": "date-time"},
        "revoked_at": {"type": ["string", "null"], "format": "date-time"},
    },
}


def add_routes(app: web.Application) -> None:
    """Register `/v1/tokens`."""
    app.router.add_post("/v1/tokens", create_token)
    app.router.add_get("/v1/tokens", list_tokens)
    app.router.add_delete("/v1/tokens/{token_id}", revoke_token)
    created = {
        **_TOKEN,
        "properties": {
            **_TOKEN["properties"],
            "secret": {"type": "string", "description": "Shown once; only its hash is kept"},
        },
    }
    openapi.add_path(
        app,
        "/v1/tokens",
        "post",
        summary="Create a token (the secret is in this response only)",
        roles=ADMINS,
        request=TokenCreate,
        response=created,
        status=201,
        tags=TAG,
    )
    openapi.add_path(
        app,
        "/v1/tokens",
        "get",
        summary="List tokens (never their secrets)",
        roles=ADMINS,
        response={"type": "object", "properties": {"items": {"type": "array", "items": _TOKEN}}},
        tags=TAG,
    )
    openapi.add_path(
        app,
        "/v1/tokens/{token_id}",
        "delete",
        summary="Revoke a token (effective immediately)",
        roles=ADMINS,
        status=204,
        responses={404: "Unknown token"},
        tags=TAG,
    )
