"""`GET /v1/changes`: every change awaiting approval, with its diff against what is live."""

from __future__ import annotations

from aiohttp import web

from registry import service, workloads

from . import keys
from .responses import ChangeList, ChangeOut
from .routes import RouteTable

READERS = ("engineer", "security", "admin")

routes = RouteTable(tags=("recipients",))


def _links(entity_type: str, entity_id: str) -> dict[str, str]:
    base = f"/v1/{entity_type}s/{entity_id}"
    return {"self": base, "approve": f"{base}/approve", "reject": f"{base}/reject"}


@routes.get(
    "/v1/changes",
    summary="Changes awaiting approval (proposals and staged edits of live entries), each "
    "with its diff against live, its authors and the version to approve",
    roles=READERS,
    response=ChangeList,
)
async def list_changes(request: web.Request) -> ChangeList:
    async with keys.sessions(request)() as session:
        items = await service.list_pending_changes(session)
        items += await workloads.list_pending_changes(session)
    return ChangeList(
        items=[
            ChangeOut.model_validate(
                {**item, "links": _links(item["entity_type"], item["entity_id"])}
            )
            for item in items
        ]
    )
