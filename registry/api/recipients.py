"""`/v1/recipients`: propose, read, edit and delete recipients and grants; review them."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import ValidationError

from registry import service
from registry.errors import ApiError, invalid_field
from registry.models import RECIPIENT_STATUSES
from registry.pagination import decode_cursor, encode_cursor, parse_limit
from registry.payloads import GrantCreate, GrantPatch, RecipientCreate, RecipientPatch, ReviewNote
from sharewall.taxonomy import load_taxonomy

from . import keys, openapi
from .auth import Principal, require_role
from .bodies import json_response, parse_json, read_body, read_json, validation_problem

READERS = ("engineer", "security", "admin")
AUTHORS = ("engineer",)
REVIEWERS = ("security",)
TAG = ("recipients",)

_IF_MATCH = {"If-Match": ({"type": "string"}, 'The recipient\'s ETag ("<version>"); 412 if stale')}


def _actor(principal: Principal) -> service.Actor:
    return principal.actor()


def _etag(version: int) -> str:
    return f'"{version}"'


def _expected_version(request: web.Request) -> int | None:
    """The version named by `If-Match` (`"3"`, `W/"3"` or `3`), or None when absent."""
    raw = request.headers.get("If-Match")
    if raw is None or raw.strip() == "*":
        return None
    value = raw.strip().removeprefix("W/").strip('"')
    if not value.isdigit():
        raise ApiError(400, "bad-if-match", "Invalid If-Match", 'expected an ETag like "3"')
    return int(value)


def _recipient_response(loaded: service.Loaded, status: int = 200) -> web.Response:
    return json_response(
        loaded.view(), status=status, headers={"ETag": _etag(loaded.recipient.version)}
    )


def _grant_id(request: web.Request) -> int:
    raw = request.match_info["gid"]
    if not raw.isdigit() or len(raw) > 18:
        raise ApiError(404, "not-found", "Not found", f"no grant {raw[:40]}")
    return int(raw)


async def _optional_note(request: web.Request) -> str | None:
    raw = await read_body(request)
    if not raw.strip():
        return None
    try:
        return ReviewNote.model_validate(parse_json(raw)).note
    except ValidationError as exc:
        raise validation_problem(exc) from None


# --------------------------------------------------------------------------- handlers


async def list_recipients(request: web.Request) -> web.Response:
    require_role(request, *READERS)
    query = request.query
    status = query.get("status")
    if status is not None and status not in RECIPIENT_STATUSES:
        raise invalid_field("status", f"unknown status {status!r}")
    kind = query.get("kind")
    if kind is not None and not load_taxonomy().is_recipient_kind(kind):
        raise invalid_field("kind", f"unknown recipient kind {kind!r}")
    limit = parse_limit(query.get("limit"))
    after = decode_cursor(query["cursor"]) if query.get("cursor") else None
    if after is not None and not isinstance(after, str):
        raise ApiError(400, "bad-cursor", "Invalid cursor", "pass back a cursor unchanged")
    async with keys.sessions(request)() as session:
        page = await service.list_recipients(
            session, status=status, kind=kind, after_id=after, limit=limit
        )
    next_cursor = encode_cursor(page[-1].recipient.id) if len(page) == limit else None
    return json_response({"items": [r.view() for r in page], "next_cursor": next_cursor})


async def create_recipient(request: web.Request) -> web.Response:
    principal = require_role(request, *AUTHORS)
    body = await read_json(request, RecipientCreate)
    async with keys.transaction(request) as session:
        loaded = await service.create_recipient(session, body, _actor(principal))
    resp = _recipient_response(loaded, status=201)
    resp.headers["Location"] = f"/v1/recipients/{loaded.recipient.id}"
    return resp


async def get_recipient(request: web.Request) -> web.Response:
    require_role(request, *READERS)
    async with keys.sessions(request)() as session:
        loaded = await service.load_recipient(session, request.match_info["id"])
        change = await service.change_view(session, loaded)
        reviews = await service.list_reviews(session, loaded.recipient.id)
    doc = loaded.view()
    if change is not None:
        doc["pending_change"] = change
    doc["reviews"] = reviews
    return json_response(doc, headers={"ETag": _etag(loaded.recipient.version)})


async def patch_recipient(request: web.Request) -> web.Response:
    principal = require_role(request, *AUTHORS)
    expected = _expected_version(request)
    body = await read_json(request, RecipientPatch)
    async with keys.transaction(request) as session:
        loaded = await service.update_recipient(
            session, request.match_info["id"], body, _actor(principal), expected_version=expected
        )
    return _recipient_response(loaded)


async def delete_recipient(request: web.Request) -> web.Response:
    principal = require_role(request, *AUTHORS, *REVIEWERS)
    expected = _expected_version(request)
    async with keys.transaction(request) as session:
        await service.delete_recipient(
            session, request.match_info["id"], _actor(principal), expected_version=expected
        )
    return web.Response(status=204)


async def add_grant(request: web.Request) -> web.Response:
    principal = require_role(request, *AUTHORS)
    expected = _expected_version(request)
    body = await read_json(request, GrantCreate)
    async with keys.transaction(request) as session:
        loaded, grant = await service.add_grant(
            session, request.match_info["id"], body, _actor(principal), expected_version=expected
        )
    return json_response(
        service.grant_view(grant),
        status=201,
        headers={
            "ETag": _etag(loaded.recipient.version),
            "Location": f"/v1/recipients/{loaded.recipient.id}/grants/{grant.id}",
        },
    )


async def patch_grant(request: web.Request) -> web.Response:
    principal = require_role(request, *AUTHORS)
    expected = _expected_version(request)
    grant_id = _grant_id(request)
    body = await read_json(request, GrantPatch)
    async with keys.transaction(request) as session:
        loaded, grant = await service.update_grant(
            session,
            request.match_info["id"],
            grant_id,
            body,
            _actor(principal),
            expected_version=expected,
        )
    return json_response(
        service.grant_view(grant), headers={"ETag": _etag(loaded.recipient.version)}
    )


async def delete_grant(request: web.Request) -> web.Response:
    principal = require_role(request, *AUTHORS)
    expected = _expected_version(request)
    grant_id = _grant_id(request)
    async with keys.transaction(request) as session:
        loaded, staged = await service.delete_grant(
            session,
            request.match_info["id"],
            grant_id,
            _actor(principal),
            expected_version=expected,
        )
    if staged:  # an approved grant of a live recipient: removed once the change is approved
        return _recipient_response(loaded, status=202)
    return web.Response(status=204)


async def revoke_grant(request: web.Request) -> web.Response:
    principal = require_role(request, *REVIEWERS)
    grant_id = _grant_id(request)
    note = await _optional_note(request)
    async with keys.transaction(request) as session:
        loaded = await service.revoke_grant(
            session, request.match_info["id"], grant_id, _actor(principal), note
        )
    return _recipient_response(loaded)


async def approve(request: web.Request) -> web.Response:
    principal = require_role(request, *REVIEWERS)
    expected = _expected_version(request)  # required: the service answers 428 without it
    note = await _optional_note(request)
    async with keys.transaction(request) as session:
        loaded = await service.approve_recipient(
            session, request.match_info["id"], _actor(principal), note, expected_version=expected
        )
    return _recipient_response(loaded)


async def reject(request: web.Request) -> web.Response:
    principal = require_role(request, *REVIEWERS)
    expected = _expected_version(request)
    note = await _optional_note(request)
    async with keys.transaction(request) as session:
        loaded = await service.reject_recipient(
            session, request.match_info["id"], _actor(principal), note, expected_version=expected
        )
    return _recipient_response(loaded)


def _status_action(action: str) -> Any:
    async def handler(request: web.Request) -> web.Response:
        principal = require_role(request, *REVIEWERS)
        expected = _expected_version(request)
        note = await _optional_note(request)
        async with keys.transaction(request) as session:
            loaded = await service.set_recipient_status(
                session,
                request.match_info["id"],
                action,
                _actor(principal),
                note,
                expected_version=expected,
            )
        return _recipient_response(loaded)

    handler.__name__ = action
    return handler


# --------------------------------------------------------------------------- routes

_RECIPIENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "A recipient with hosts, grants (each with id and status), version.",
    "properties": {
        "id": {"type": "string"},
        "name": {"type": "string"},
        "kind": {"type": "string"},
        "status": {"type": "string", "enum": list(RECIPIENT_STATUSES)},
        "regions": {"type": "array", "items": {"type": "string"}},
        "hosts": {"type": "array", "items": {"type": "string"}},
        "tls_origination": {"type": "boolean"},
        "inspect_tls": {"type": "boolean"},
        "owner_team": {"type": ["string", "null"]},
        "contract_ref": {"type": ["string", "null"]},
        "notes": {"type": ["string", "null"]},
        "grants": {"type": "array", "items": {"$ref": "#/components/schemas/GrantOut"}},
        "proposed_by": {"type": "string"},
        "updated_by": {"type": "string"},
        "created_at": {"type": "string", "format": "date-time"},
        "updated_at": {"type": "string", "format": "date-time"},
        "version": {"type": "integer"},
        "pending_change": {
            "type": ["object", "null"],
            "description": "What awaits approval: kind (proposal | update), proposed (the "
            "recipient as approving would make it live, registry-file shape), diff against "
            "live (fields, hosts, grants added/removed/changed); on GET also live, authors "
            "(people who authored it since the last approval) and version",
        },
        "reviews": {
            "type": "array",
            "description": "GET only: review decisions (approve, reject, suspend, revoke) "
            "with actor, time and note",
        },
    },
}
_GRANT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "purpose": {"type": "string"},
        "categories": {"type": "array", "items": {"type": "string"}},
        "legal_basis": {"type": ["string", "null"]},
        "expires": {"type": ["string", "null"], "format": "date"},
        "status": {"type": "string", "enum": ["proposed", "approved", "revoked"]},
        "change": {
            "type": ["string", "null"],
            "enum": ["update", "remove", None],
            "description": "A pending (unapproved) edit or removal of this approved grant",
        },
        "proposed_by": {"type": "string"},
        "approved_by": {"type": ["string", "null"]},
        "created_at": {"type": "string", "format": "date-time"},
        "updated_at": {"type": "string", "format": "date-time"},
    },
}
_REF_RECIPIENT = {"$ref": "#/components/schemas/RecipientOut"}
_REF_GRANT = {"$ref": "#/components/schemas/GrantOut"}


def add_routes(app: web.Application) -> None:
    """Register the recipient and grant routes and their OpenAPI entries."""
    r = app.router
    r.add_get("/v1/recipients", list_recipients)
    r.add_post("/v1/recipients", create_recipient)
    r.add_get("/v1/recipients/{id}", get_recipient)
    r.add_patch("/v1/recipients/{id}", patch_recipient)
    r.add_delete("/v1/recipients/{id}", delete_recipient)
    r.add_post("/v1/recipients/{id}/grants", add_grant)
    r.add_patch("/v1/recipients/{id}/grants/{gid}", patch_grant)
    r.add_delete("/v1/recipients/{id}/grants/{gid}", delete_grant)
    r.add_post("/v1/recipients/{id}/grants/{gid}/revoke", revoke_grant)
    r.add_post("/v1/recipients/{id}/approve", approve)
    r.add_post("/v1/recipients/{id}/reject", reject)
    for action in ("suspend", "revoke"):
        r.add_post(f"/v1/recipients/{{id}}/{action}", _status_action(action))

    doc = app[keys.OPENAPI]
    doc["components"]["schemas"]["RecipientOut"] = _RECIPIENT_SCHEMA
    doc["components"]["schemas"]["GrantOut"] = _GRANT_SCHEMA
    add = openapi.add_path
    page = {
        "type": "object",
        "properties": {
            "items": {"type": "array", "items": _REF_RECIPIENT},
            "next_cursor": {"type": ["string", "null"]},
        },
    }
    add(
        app,
        "/v1/recipients",
        "get",
        summary="List recipients (keyset pages ordered by id)",
        roles=READERS,
        response=page,
        query={
            "status": ({"type": "string", "enum": list(RECIPIENT_STATUSES)}, "Only this status"),
            "kind": ({"type": "string"}, "Only this recipient kind (taxonomy id)"),
            "limit": ({"type": "integer", "minimum": 1, "maximum": 1000}, "Page size"),
            "cursor": ({"type": "string"}, "`next_cursor` of the previous page"),
        },
        tags=TAG,
    )
    add(
        app,
        "/v1/recipients",
        "post",
        summary="Propose a recipient (status `proposed`)",
        roles=AUTHORS,
        request=RecipientCreate,
        response=_REF_RECIPIENT,
        status=201,
        responses={409: "Duplicate id, or a host registered to another recipient"},
        tags=TAG,
    )
    add(
        app,
        "/v1/recipients/{id}",
        "get",
        summary="A recipient with hosts and grants (ETag = version)",
        roles=READERS,
        response=_REF_RECIPIENT,
        responses={404: "Unknown recipient"},
        tags=TAG,
    )
    add(
        app,
        "/v1/recipients/{id}",
        "patch",
        summary="Edit a recipient; on a live recipient the edit is a pending change "
        "(the approved version stays in force until approved)",
        roles=AUTHORS,
        request=RecipientPatch,
        response=_REF_RECIPIENT,
        headers=_IF_MATCH,
        responses={404: "Unknown recipient", 409: "Host taken", 412: "Stale If-Match"},
        tags=TAG,
    )
    add(
        app,
        "/v1/recipients/{id}",
        "delete",
        summary="Delete a recipient with its hosts and grants",
        roles=AUTHORS + REVIEWERS,
        status=204,
        headers=_IF_MATCH,
        responses={404: "Unknown recipient", 412: "Stale If-Match"},
        tags=TAG,
    )
    add(
        app,
        "/v1/recipients/{id}/grants",
        "post",
        summary="Propose a grant",
        roles=AUTHORS,
        request=GrantCreate,
        response=_REF_GRANT,
        status=201,
        headers=_IF_MATCH,
        responses={404: "Unknown recipient"},
        tags=TAG,
    )
    add(
        app,
        "/v1/recipients/{id}/grants/{gid}",
        "patch",
        summary="Edit a grant (it goes back to `proposed`)",
        roles=AUTHORS,
        request=GrantPatch,
        response=_REF_GRANT,
        headers=_IF_MATCH,
        responses={404: "Unknown recipient or grant"},
        tags=TAG,
    )
    add(
        app,
        "/v1/recipients/{id}/grants/{gid}",
        "delete",
        summary="Delete a grant (on a live recipient an approved grant's removal is a "
        "pending change: 202 with the recipient)",
        roles=AUTHORS,
        status=204,
        headers=_IF_MATCH,
        responses={202: "Removal staged for approval", 404: "Unknown recipient or grant"},
        tags=TAG,
    )
    add(
        app,
        "/v1/recipients/{id}/grants/{gid}/revoke",
        "post",
        summary="Revoke one grant",
        roles=REVIEWERS,
        request=ReviewNote,
        response=_REF_RECIPIENT,
        responses={404: "Unknown recipient or grant"},
        tags=TAG,
    )
    add(
        app,
        "/v1/recipients/{id}/approve",
        "post",
        summary="Approve a recipient's pending change (four eyes; If-Match required)",
        roles=REVIEWERS,
        request=ReviewNote,
        response=_REF_RECIPIENT,
        headers={
            "If-Match": (
                {"type": "string"},
                'Required: the ETag ("<version>") of the version reviewed',
            )
        },
        responses={
            403: "Four eyes: the approver authored part of the change since the last "
            "approval (type four-eyes; `authors`, `authored` list who did what)",
            404: "Unknown recipient",
            409: "Revoked, or nothing awaiting approval",
            412: "Stale If-Match: the change moved since it was reviewed",
            428: "No If-Match (type precondition-required)",
        },
        tags=TAG,
    )
    add(
        app,
        "/v1/recipients/{id}/reject",
        "post",
        summary="Reject a pending change (a live recipient keeps its approved version; "
        "a proposal becomes revoked); the note is kept",
        roles=REVIEWERS,
        request=ReviewNote,
        response=_REF_RECIPIENT,
        headers=_IF_MATCH,
        responses={404: "Unknown recipient", 409: "Nothing awaiting approval"},
        tags=TAG,
    )
    for action, summary in (
        ("suspend", "Suspend an approved recipient"),
        ("revoke", "Revoke a recipient"),
    ):
        add(
            app,
            f"/v1/recipients/{{id}}/{action}",
            "post",
            summary=summary,
            roles=REVIEWERS,
            request=ReviewNote,
            response=_REF_RECIPIENT,
            headers=_IF_MATCH,
            responses={404: "Unknown recipient", 409: "Not in a state that allows it"},
            tags=TAG,
        )
