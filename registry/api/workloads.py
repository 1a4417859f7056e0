"""`/v1/workloads`: engineers propose workloads (purposes bound to callers), security reviews."""

from __future__ import annotations

from aiohttp import web

from registry import workloads as service
from registry.models import RECIPIENT_STATUSES, Workload
from registry.payloads import ReviewNote, WorkloadCreate, WorkloadPatch

from . import keys
from .responses import WorkloadList, WorkloadOut
from .routes import Reply, RouteTable, caller, if_match, optional_body, request_body

READERS = ("engineer", "security", "admin")
AUTHORS = ("engineer",)
REVIEWERS = ("security",)
ONE = "/v1/workloads/{namespace}/{name}"

routes = RouteTable(tags=("workloads",))

_IF_MATCH = {"If-Match": ({"type": "string"}, 'The workload\'s ETag ("<version>"); 412 if stale')}
_ETAG = 'The workload\'s version ("<version>"), for the next If-Match'


def _key(request: web.Request) -> tuple[str, str]:
    return request.match_info["namespace"], request.match_info["name"]


def _reply(workload: Workload, status: int | None = None) -> Reply:
    return Reply(
        WorkloadOut.model_validate(service.WorkloadView(workload).view()),
        status=status,
        etag=workload.version,
    )


def _note(request: web.Request) -> str | None:
    body = optional_body(request, ReviewNote)
    return body.note if body else None


@routes.get(
    "/v1/workloads",
    summary="List workloads",
    roles=READERS,
    response=WorkloadList,
    query={
        "namespace": ({"type": "string"}, "Only this namespace"),
        "status": ({"type": "string", "enum": list(RECIPIENT_STATUSES)}, "Only this status"),
    },
)
async def list_workloads(request: web.Request) -> WorkloadList:
    async with keys.sessions(request)() as session:
        rows = await service.list_workloads(
            session, namespace=request.query.get("namespace"), status=request.query.get("status")
        )
    return WorkloadList(
        items=[WorkloadOut.model_validate(service.WorkloadView(w).view()) for w in rows]
    )


@routes.post(
    "/v1/workloads",
    summary="Propose a workload (status `proposed`)",
    roles=AUTHORS,
    request=WorkloadCreate,
    response=WorkloadOut,
    status=201,
    responses={409: "Already registered", 422: "Unknown purpose or recipient"},
    etag=_ETAG,
)
async def create_workload(request: web.Request) -> Reply:
    body = request_body(request, WorkloadCreate)
    async with keys.transaction(request) as session:
        workload = await service.create_workload(session, body, caller(request).actor())
    reply = _reply(workload)
    reply.headers["Location"] = f"/v1/workloads/{workload.namespace}/{workload.name}"
    return reply


@routes.get(
    ONE,
    summary="A workload: its live version, its pending change and its reviews (ETag = version)",
    roles=READERS,
    response=WorkloadOut,
    responses={404: "Unknown workload"},
    etag=_ETAG,
)
async def get_workload(request: web.Request) -> Reply:
    async with keys.sessions(request)() as session:
        workload = await service.load_workload(session, *_key(request))
        change = await service.change_view(session, workload)
        reviews = await service.list_reviews(session, *_key(request))
    doc = {**service.WorkloadView(workload).view(), "reviews": reviews}
    if change is not None:
        doc["pending_change"] = change
    return Reply(WorkloadOut.model_validate(doc), etag=workload.version)


@routes.patch(
    ONE,
    summary="Edit purposes or recipients; on a live workload a pending change",
    roles=AUTHORS,
    request=WorkloadPatch,
    response=WorkloadOut,
    headers=_IF_MATCH,
    responses={404: "Unknown workload"},
    etag=_ETAG,
)
async def patch_workload(request: web.Request) -> Reply:
    expected = if_match(request)
    body = request_body(request, WorkloadPatch)
    async with keys.transaction(request) as session:
        workload = await service.update_workload(
            session,
            *_key(request),
            body.model_dump(exclude_unset=True),
            caller(request).actor(),
            expected_version=expected,
        )
    return _reply(workload)


@routes.delete(
    ONE,
    summary="Delete a workload that is not live (a live one is revoked first)",
    roles=AUTHORS + REVIEWERS,
    status=204,
    headers=_IF_MATCH,
    responses={404: "Unknown workload", 409: "Live: revoke it first"},
)
async def delete_workload(request: web.Request) -> Reply:
    expected = if_match(request)
    async with keys.transaction(request) as session:
        await service.delete_workload(
            session, *_key(request), caller(request).actor(), expected_version=expected
        )
    return Reply()


_REVIEW = {
    "roles": REVIEWERS,
    "request": ReviewNote,
    "body": "optional",
    "response": WorkloadOut,
    "etag": _ETAG,
}


@routes.post(
    ONE + "/approve",
    summary="Approve a workload's pending change (four eyes; If-Match required)",
    headers={
        "If-Match": ({"type": "string"}, 'Required: the ETag ("<version>") of the version reviewed')
    },
    responses={
        403: "Four eyes (type four-eyes)",
        409: "Revoked, or nothing awaiting approval",
        428: "No If-Match",
    },
    **_REVIEW,
)
async def approve(request: web.Request) -> Reply:
    expected = if_match(request)
    async with keys.transaction(request) as session:
        workload = await service.approve_workload(
            session,
            *_key(request),
            caller(request).actor(),
            _note(request),
            expected_version=expected,
        )
    return _reply(workload)


@routes.post(
    ONE + "/reject",
    summary="Reject a pending change (a live workload keeps its approved version; a proposal "
    "becomes revoked)",
    headers=_IF_MATCH,
    responses={409: "Nothing awaiting approval"},
    **_REVIEW,
)
async def reject(request: web.Request) -> Reply:
    expected = if_match(request)
    async with keys.transaction(request) as session:
        workload = await service.reject_workload(
            session,
            *_key(request),
            caller(request).actor(),
            _note(request),
            expected_version=expected,
        )
    return _reply(workload)


async def _set_status(request: web.Request, action: str) -> Reply:
    expected = if_match(request)
    async with keys.transaction(request) as session:
        workload = await service.set_workload_status(
            session,
            *_key(request),
            action,
            caller(request).actor(),
            _note(request),
            expected_version=expected,
        )
    return _reply(workload)


@routes.post(
    ONE + "/suspend",
    summary="Suspend an approved workload (at once)",
    headers=_IF_MATCH,
    responses={409: "Not approved"},
    **_REVIEW,
)
async def suspend(request: web.Request) -> Reply:
    return await _set_status(request, "suspend")


@routes.post(
    ONE + "/revoke",
    summary="Revoke a workload (at once; revoking the last live one switches source binding off)",
    headers=_IF_MATCH,
    **_REVIEW,
)
async def revoke(request: web.Request) -> Reply:
    return await _set_status(request, "revoke")
