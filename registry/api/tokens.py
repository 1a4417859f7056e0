"""`/v1/tokens`: API tokens, managed by admins (the secret is returned once, at creation)."""

from __future__ import annotations

from aiohttp import web

from registry import tokens
from registry.errors import ApiError
from registry.payloads import TokenCreate, TokenRotate

from . import keys
from .auth import forget_token, tokens_changed
from .responses import TokenCreated, TokenList, TokenOut, TokenRotated
from .routes import Reply, RouteTable, caller, optional_body, request_body

ADMINS = ("admin",)


def _token_id(request: web.Request) -> int:
    raw = request.match_info["token_id"]
    if not raw.isdigit() or len(raw) > 18:
        raise ApiError(404, "not-found", "Not found", f"no token {raw[:40]}")
    return int(raw)


routes = RouteTable(tags=("tokens",))


@routes.post(
    "/v1/tokens",
    summary="Create a token (the secret is in this response only)",
    roles=ADMINS,
    request=TokenCreate,
    response=TokenCreated,
    status=201,
)
async def create_token(request: web.Request) -> TokenCreated:
    body = request_body(request, TokenCreate)
    async with keys.transaction(request) as session:
        principal = caller(request)
        token, secret = await tokens.create_token(
            session,
            name=body.name,
            role=body.role,
            owner=body.owner,
            actor=principal.actor(),
        )
    tokens_changed(request.app)
    return TokenCreated(**tokens.token_view(token), secret=secret)


@routes.post(
    "/v1/tokens/{token_id}/rotate",
    summary="Rotate a token: a new secret of the same name, role and shipping identity (in "
    "this response only); the old secret keeps authenticating until `previous.expires_at` "
    "(`grace_seconds`, default 3600; 0 revokes it at once), and answers to it carry "
    "`Sharewall-Token-Expires`",
    roles=ADMINS,
    request=TokenRotate,
    body="optional",
    response=TokenRotated,
    status=201,
    responses={404: "Unknown token", 409: "The token is revoked or was rotated already"},
)
async def rotate_token(request: web.Request) -> TokenRotated:
    old_id = _token_id(request)
    body = optional_body(request, TokenRotate) or TokenRotate()
    async with keys.transaction(request) as session:
        principal = caller(request)
        old, token, secret = await tokens.rotate_token(
            session, old_id, grace_seconds=body.grace_seconds, actor=principal.actor()
        )
    # The old token's cached lookup carries no expiry yet.
    forget_token(request.app, old.token_hash)
    return TokenRotated(
        **tokens.token_view(token), secret=secret, previous=TokenOut(**tokens.token_view(old))
    )


@routes.get(
    "/v1/tokens", summary="List tokens (never their secrets)", roles=ADMINS, response=TokenList
)
async def list_tokens(request: web.Request) -> TokenList:
    async with keys.sessions(request)() as session:
        rows = await tokens.list_tokens(session)
    return TokenList(items=[TokenOut(**tokens.token_view(t)) for t in rows])


@routes.delete(
    "/v1/tokens/{token_id}",
    summary="Revoke a token (effective immediately; a rotated token's grace ends)",
    roles=ADMINS,
    status=204,
    responses={404: "Unknown token"},
)
async def revoke_token(request: web.Request) -> Reply:
    async with keys.transaction(request) as session:
        principal = caller(request)
        token = await tokens.revoke_token(session, _token_id(request), actor=principal.actor())
    forget_token(request.app, token.token_hash)
    return Reply()
