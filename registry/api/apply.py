"""`POST /v1/apply`: make the registry match a registry document (what `registry apply` sends)."""

from __future__ import annotations

from aiohttp import web

from registry.apply import apply_registry
from registry.errors import ApiError
from registry.payloads import ApplyRequest
from sharewall.registry_file import RegistryFileError, parse_registry_document

from . import keys, openapi
from .auth import require_role
from .bodies import json_response, read_json

APPLIERS = ("engineer", "security", "admin")


async def apply(request: web.Request) -> web.Response:
    principal = require_role(request, *APPLIERS)
    # A whole registry can exceed the 1 MiB API limit; it is bounded by the upload limit.
    body = await read_json(request, ApplyRequest, max_bytes=keys.settings(request).max_upload_bytes)
    try:
        wanted = parse_registry_document({"recipients": body.recipients}, source="body")
    except RegistryFileError as exc:
        raise ApiError(
            422, "validation-error", "Registry document is not valid", str(exc)
        ) from None
    actor = principal.actor()
    async with keys.transaction(request) as session:
        diff = await apply_registry(session, wanted, actor, dry_run=body.dry_run)
    return json_response(diff.to_json())


def add_routes(app: web.Application) -> None:
    """Register `/v1/apply`."""
    app.router.add_post("/v1/apply", apply)
    openapi.add_path(
        app,
        "/v1/apply",
        "post",
        summary="Make the registry match a registry document (registry as code)",
        roles=APPLIERS,
        request=ApplyRequest,
        response={
            "type": "object",
            "description": "The diff: recipients added / changed (fields, hosts, grants) / "
            "removed; `applied` is false for a dry run or when nothing changed.",
            "properties": {
                "changed": {"type": "boolean"},
                "applied": {"type": "boolean"},
                "version": {"type": ["integer", "null"]},
                "recipients": {"type": "object"},
            },
        },
        responses={
            403: "Setting a status other than proposed needs security or admin "
            "(type apply-needs-reviewer)",
        },
        tags=("recipients",),
    )
