"""`/v1/recipients`: propose, read, edit and delete recipients and grants; review them."""

from __future__ import annotations

from aiohttp import web

from registry import service
from registry.errors import ApiError, invalid_field
from registry.models import RECIPIENT_STATUSES
from registry.pagination import decode_cursor, page, parse_limit
from registry.payloads import GrantCreate, GrantPatch, RecipientCreate, RecipientPatch, ReviewNote
from sharewall.taxonomy import load_taxonomy

from . import keys
from .responses import GrantOut, RecipientOut, RecipientPage
from .routes import Reply, RouteTable, caller, if_match, optional_body, request_body

READERS = ("engineer", "security", "admin")
AUTHORS = ("engineer",)
REVIEWERS = ("security",)

routes = RouteTable(tags=("recipients",))

_IF_MATCH = {"If-Match": ({"type": "string"}, 'The recipient\'s ETag ("<version>"); 412 if stale')}
_ETAG = 'The recipient\'s version ("<version>"), for the next If-Match'


def recipient_out(loaded: service.Loaded) -> RecipientOut:
    """The API form of a loaded recipient."""
    return RecipientOut.model_validate(loaded.view())


def _recipient_reply(loaded: service.Loaded, status: int | None = None) -> Reply:
    return Reply(recipient_out(loaded), status=status, etag=loaded.recipient.version)


def _grant_id(request: web.Request) -> int:
    raw = request.match_info["gid"]
    if not raw.isdigit() or len(raw) > 18:
        raise ApiError(404, "not-found", "Not found", f"no grant {raw[:40]}")
    return int(raw)


def _note(request: web.Request) -> str | None:
    body = optional_body(request, ReviewNote)
    return body.note if body else None


@routes.get(
    "/v1/recipients",
    summary="List recipients (keyset pages ordered by id)",
    roles=READERS,
    response=RecipientPage,
    query={
        "status": ({"type": "string", "enum": list(RECIPIENT_STATUSES)}, "Only this status"),
        "kind": ({"type": "string"}, "Only this recipient kind (taxonomy id)"),
        "limit": ({"type": "integer", "minimum": 1, "maximum": 1000}, "Page size"),
        "cursor": ({"type": "string"}, "`next_cursor` of the previous page"),
    },
)
async def list_recipients(request: web.Request) -> RecipientPage:
    query = request.query
    status = query.get("status")
    if status is not None and status not in RECIPIENT_STATUSES:
        raise invalid_field("status", f"unknown status {status!r}")
    kind = query.get("kind")
    if kind is not None and not load_taxonomy().is_recipient_kind(kind):
        raise invalid_field("kind", f"unknown recipient kind {kind!r}")
    limit = parse_limit(query.get("limit"))
    after = (
        decode_cursor(query["cursor"], lambda v: isinstance(v, str))
        if query.get("cursor")
        else None
    )
    async with keys.sessions(request)() as session:
        rows = await service.list_recipients(
            session, status=status, kind=kind, after_id=after, limit=limit + 1
        )
    kept, next_cursor = page(rows, limit, lambda r: r.recipient.id)
    return RecipientPage(items=[recipient_out(r) for r in kept], next_cursor=next_cursor)


@routes.post(
    "/v1/recipients",
    summary="Propose a recipient (status `proposed`)",
    roles=AUTHORS,
    request=RecipientCreate,
    response=RecipientOut,
    status=201,
    responses={409: "Duplicate id, or a host registered to another recipient"},
    etag=_ETAG,
)
async def create_recipient(request: web.Request) -> Reply:
    body = request_body(request, RecipientCreate)
    async with keys.transaction(request) as session:
        loaded = await service.create_recipient(session, body, caller(request).actor())
    reply = _recipient_reply(loaded)
    reply.headers["Location"] = f"/v1/recipients/{loaded.recipient.id}"
    return reply


@routes.get(
    "/v1/recipients/{id}",
    summary="A recipient: its live version with hosts and grants, its pending change "
    "(with diff and authors) and its reviews (ETag = version)",
    roles=READERS,
    response=RecipientOut,
    responses={404: "Unknown recipient"},
    etag=_ETAG,
)
async def get_recipient(request: web.Request) -> Reply:
    async with keys.sessions(request)() as session:
        loaded = await service.load_recipient(session, request.match_info["id"])
        change = await service.change_view(session, loaded)
        reviews = await service.list_reviews(session, loaded.recipient.id)
    doc = {**loaded.view(), "reviews": reviews}
    if change is not None:
        doc["pending_change"] = change
    return Reply(RecipientOut.model_validate(doc), etag=loaded.recipient.version)


@routes.patch(
    "/v1/recipients/{id}",
    summary="Edit a recipient; on a live recipient the edit is a pending change (the "
    "approved version stays in force until approved)",
    roles=AUTHORS,
    request=RecipientPatch,
    response=RecipientOut,
    headers=_IF_MATCH,
    responses={404: "Unknown recipient", 409: "Host taken"},
    etag=_ETAG,
)
async def patch_recipient(request: web.Request) -> Reply:
    expected = if_match(request)
    body = request_body(request, RecipientPatch)
    async with keys.transaction(request) as session:
        loaded = await service.update_recipient(
            session,
            request.match_info["id"],
            body,
            caller(request).actor(),
            expected_version=expected,
        )
    return _recipient_reply(loaded)


@routes.delete(
    "/v1/recipients/{id}",
    summary="Delete a recipient with its hosts and grants",
    roles=AUTHORS + REVIEWERS,
    status=204,
    headers=_IF_MATCH,
    responses={404: "Unknown recipient"},
)
async def delete_recipient(request: web.Request) -> Reply:
    expected = if_match(request)
    async with keys.transaction(request) as session:
        await service.delete_recipient(
            session, request.match_info["id"], caller(request).actor(), expected_version=expected
        )
    return Reply()


@routes.post(
    "/v1/recipients/{id}/grants",
    summary="Propose a grant",
    roles=AUTHORS,
    request=GrantCreate,
    response=GrantOut,
    status=201,
    headers=_IF_MATCH,
    responses={404: "Unknown recipient"},
    etag=_ETAG,
)
async def add_grant(request: web.Request) -> Reply:
    expected = if_match(request)
    body = request_body(request, GrantCreate)
    async with keys.transaction(request) as session:
        loaded, grant = await service.add_grant(
            session,
            request.match_info["id"],
            body,
            caller(request).actor(),
            expected_version=expected,
        )
    return Reply(
        GrantOut.model_validate(service.grant_view(grant)),
        headers={"Location": f"/v1/recipients/{loaded.recipient.id}/grants/{grant.id}"},
        etag=loaded.recipient.version,
    )


@routes.patch(
    "/v1/recipients/{id}/grants/{gid}",
    summary="Edit a grant (on a live recipient a pending change of the approved grant)",
    roles=AUTHORS,
    request=GrantPatch,
    response=GrantOut,
    headers=_IF_MATCH,
    responses={404: "Unknown recipient or grant"},
    etag=_ETAG,
)
async def patch_grant(request: web.Request) -> Reply:
    expected = if_match(request)
    grant_id = _grant_id(request)
    body = request_body(request, GrantPatch)
    async with keys.transaction(request) as session:
        loaded, grant = await service.update_grant(
            session,
            request.match_info["id"],
            grant_id,
            body,
            caller(request).actor(),
            expected_version=expected,
        )
    return Reply(GrantOut.model_validate(service.grant_view(grant)), etag=loaded.recipient.version)


@routes.delete(
    "/v1/recipients/{id}/grants/{gid}",
    summary="Delete a grant (on a live recipient an approved grant's removal is a pending "
    "change: 202 with the recipient)",
    roles=AUTHORS,
    status=204,
    response=RecipientOut,
    headers=_IF_MATCH,
    responses={202: "Removal staged for approval", 404: "Unknown recipient or grant"},
    etag=_ETAG,
)
async def delete_grant(request: web.Request) -> Reply:
    expected = if_match(request)
    grant_id = _grant_id(request)
    async with keys.transaction(request) as session:
        loaded, staged = await service.delete_grant(
            session,
            request.match_info["id"],
            grant_id,
            caller(request).actor(),
            expected_version=expected,
        )
    if staged:  # an approved grant of a live recipient: removed once the change is approved
        return _recipient_reply(loaded, status=202)
    return Reply(etag=loaded.recipient.version)


@routes.post(
    "/v1/recipients/{id}/grants/{gid}/revoke",
    summary="Revoke one grant",
    roles=REVIEWERS,
    request=ReviewNote,
    body="optional",
    response=RecipientOut,
    headers=_IF_MATCH,
    responses={404: "Unknown recipient or grant"},
    etag=_ETAG,
)
async def revoke_grant(request: web.Request) -> Reply:
    expected = if_match(request)
    grant_id = _grant_id(request)
    async with keys.transaction(request) as session:
        loaded = await service.revoke_grant(
            session,
            request.match_info["id"],
            grant_id,
            caller(request).actor(),
            _note(request),
            expected_version=expected,
        )
    return _recipient_reply(loaded)


@routes.post(
    "/v1/recipients/{id}/approve",
    summary="Approve a recipient's pending change (four eyes; If-Match required)",
    roles=REVIEWERS,
    request=ReviewNote,
    body="optional",
    response=RecipientOut,
    headers={
        "If-Match": ({"type": "string"}, 'Required: the ETag ("<version>") of the version reviewed')
    },
    responses={
        403: "Four eyes: the approver authored part of the change since the last approval "
        "(type four-eyes; `authors` and `authored` say who did what)",
        404: "Unknown recipient",
        409: "Revoked, or nothing awaiting approval",
        412: "Stale If-Match: the change moved since it was reviewed",
        428: "No If-Match (type precondition-required)",
    },
    etag=_ETAG,
)
async def approve(request: web.Request) -> Reply:
    expected = if_match(request)  # required: the service answers 428 without it
    async with keys.transaction(request) as session:
        loaded = await service.approve_recipient(
            session,
            request.match_info["id"],
            caller(request).actor(),
            _note(request),
            expected_version=expected,
        )
    return _recipient_reply(loaded)


@routes.post(
    "/v1/recipients/{id}/reject",
    summary="Reject a pending change (a live recipient keeps its approved version; a "
    "proposal becomes revoked); the note is kept",
    roles=REVIEWERS,
    request=ReviewNote,
    body="optional",
    response=RecipientOut,
    headers=_IF_MATCH,
    responses={404: "Unknown recipient", 409: "Nothing awaiting approval"},
    etag=_ETAG,
)
async def reject(request: web.Request) -> Reply:
    expected = if_match(request)
    async with keys.transaction(request) as session:
        loaded = await service.reject_recipient(
            session,
            request.match_info["id"],
            caller(request).actor(),
            _note(request),
            expected_version=expected,
        )
    return _recipient_reply(loaded)


async def _set_status(request: web.Request, action: str) -> Reply:
    expected = if_match(request)
    async with keys.transaction(request) as session:
        loaded = await service.set_recipient_status(
            session,
            request.match_info["id"],
            action,
            caller(request).actor(),
            _note(request),
            expected_version=expected,
        )
    return _recipient_reply(loaded)


_REVIEW = {
    "roles": REVIEWERS,
    "request": ReviewNote,
    "body": "optional",
    "response": RecipientOut,
    "headers": _IF_MATCH,
    "responses": {404: "Unknown recipient", 409: "Not in a state that allows it"},
    "etag": _ETAG,
}


@routes.post("/v1/recipients/{id}/suspend", summary="Suspend an approved recipient", **_REVIEW)
async def suspend(request: web.Request) -> Reply:
    return await _set_status(request, "suspend")


@routes.post("/v1/recipients/{id}/revoke", summary="Revoke a recipient", **_REVIEW)
async def revoke(request: web.Request) -> Reply:
    return await _set_status(request, "revoke")
