"""`POST /v1/impact`: what a candidate registry would change, replayed over recorded calls."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from registry.errors import ApiError
from registry.impact import MAX_DAYS, candidate_snapshot, replay_window
from sharewall.policy import PolicyError
from sharewall.registry_file import RegistryFileError, decode_registry_text
from sharewall.snapshot import Snapshot

from . import keys
from .routes import RouteTable, request_body
from .snapshot_hub import ensure_hub, hub

routes = RouteTable(tags=("impact",))
routes.on_setup(ensure_hub)


class ImpactRequest(BaseModel):
    """A candidate registry (a document as the YAML format, or its YAML text) and a window."""

    model_config = ConfigDict(extra="forbid")

    registry: dict[str, Any] | str = Field(
        description="A whole registry ({recipients, workloads}), one recipient mapping, or "
        "{change: {recipients, workloads}} merged into the live registry; or the YAML text"
    )
    days: int = Field(default=7, ge=1, le=MAX_DAYS, description="Days of recorded calls")


class Flip(BaseModel):
    """Calls whose outcome would change, for one (source, recipient, purpose, category, reason)."""

    from_: str = Field(alias="from")
    to: str
    source: str | None = None
    namespace: str | None = None
    recipient_id: str | None = None
    purpose: str | None = None
    category: str | None = None
    reason: str
    count: int


class ImpactWindow(BaseModel):
    from_: str = Field(alias="from")
    to: str


class ImpactOut(BaseModel):
    """Recorded calls replayed with the candidate: the flips, grouped, with counts."""

    model_config = ConfigDict(populate_by_name=True)

    window: ImpactWindow
    replayed: int = Field(description="Recorded calls in the window")
    distinct_facts: int = Field(description="Distinct policy facts among them")
    evaluations: int = Field(
        description="Policy evaluations made (each distinct input the change can affect once)"
    )
    totals: dict[str, int] = Field(description="Calls per flip direction")
    flips: list[Flip]


async def live_snapshot(app: web.Application) -> Snapshot:
    """The registry the proxies enforce now."""
    built = await hub(app).get()
    return Snapshot.from_data(built.document)


async def compute_impact(app: web.Application, document: Any, days: int) -> dict[str, Any]:
    """The impact document of a candidate registry document over the last `days`."""
    live = await live_snapshot(app)
    try:
        candidate = candidate_snapshot(live, document)
    except RegistryFileError as exc:
        raise ApiError(
            422, "validation-error", "Candidate registry is not valid", str(exc)
        ) from None
    return await impact_of(app, live, candidate, days)


async def impact_of(
    app: web.Application, live: Snapshot, candidate: Snapshot, days: int
) -> dict[str, Any]:
    """Replay the last `days` of recorded facts with `live` and `candidate`."""
    try:
        result = await replay_window(app[keys.ENGINE], live, candidate, days)
    except PolicyError as exc:
        raise ApiError(503, "policy-unavailable", "Policy unavailable", str(exc)) from None
    return result.to_json()


@routes.post(
    "/v1/impact",
    summary="Replay recorded calls with a candidate registry: what would flip allow/deny",
    roles=("security", "engineer"),
    request=ImpactRequest,
    max_body_bytes="upload",
    response=ImpactOut,
    responses={422: "The candidate is not a valid registry document"},
)
async def post_impact(request: web.Request) -> ImpactOut:
    body = request_body(request, ImpactRequest)
    document = body.registry
    if isinstance(document, str):
        try:
            document = decode_registry_text(document, source="registry")
        except RegistryFileError as exc:
            raise ApiError(
                422, "validation-error", "Candidate registry is not valid", str(exc)
            ) from None
    return ImpactOut.model_validate(await compute_impact(request.app, document, body.days))
