"""`POST /v1/apply`: make the registry match a registry document (what `registry apply` sends)."""

from __future__ import annotations

from aiohttp import web

from registry.apply import apply_registry
from registry.errors import ApiError
from registry.payloads import ApplyRequest
from sharewall.registry_file import RegistryFileError, parse_registry_document

from . import keys
from .responses import ApplyOut
from .routes import RouteTable, caller, request_body

APPLIERS = ("engineer", "security", "admin")

routes = RouteTable(tags=("recipients",))


@routes.post(
    "/v1/apply",
    summary="Make the registry match a registry document (registry as code); never "
    "approves: additions are proposals, changes to live recipients pending changes",
    roles=APPLIERS,
    request=ApplyRequest,
    # A whole registry can exceed the 1 MiB API limit; it is bounded by the upload limit.
    max_body_bytes="upload",
    response=ApplyOut,
    responses={
        403: "Suspending or revoking a live recipient needs security or admin "
        "(type apply-needs-reviewer)",
    },
)
async def apply(request: web.Request) -> ApplyOut:
    body = request_body(request, ApplyRequest)
    try:
        wanted = parse_registry_document(
            {"recipients": body.recipients, "workloads": body.workloads}, source="body"
        )
    except RegistryFileError as exc:
        raise ApiError(
            422, "validation-error", "Registry document is not valid", str(exc)
        ) from None
    actor = caller(request).actor()
    async with keys.transaction(request) as session:
        diff = await apply_registry(session, wanted, actor, dry_run=body.dry_run)
    return ApplyOut.model_validate(diff.to_json())
