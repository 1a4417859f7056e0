"""`GET /v1/datamap`: who receives which categories for which purpose, declared vs observed."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiohttp import web
from pydantic import BaseModel, Field

from registry.datamap import DEFAULT_DAYS, build_datamap, to_csv, to_fides
from registry.query import query_error

from . import keys
from .bodies import json_response
from .routes import RouteTable

READERS = ("security", "engineer", "admin")
FORMATS = ("json", "csv", "fides")

routes = RouteTable(tags=("datamap",))


class DataMapWindow(BaseModel):
    from_: datetime = Field(alias="from")
    to: datetime


class DataMapGrant(BaseModel):
    purpose: str
    categories: list[str]
    legal_basis: str | None = None
    expires: str | None = None
    status: str
    approved_by: str | None = None
    approved_at: datetime | None = None


class DataMapRecipient(BaseModel):
    id: str
    name: str
    kind: str
    status: str
    regions: list[str]
    observed: int
    blocked: int
    grants: list[DataMapGrant]


class DataMapCell(BaseModel):
    """One recipient x purpose x category."""

    recipient_id: str
    purpose: str
    category: str
    granted: bool
    observed: int
    blocked: int
    granted_unused: bool
    attempted_not_granted: bool


class DataMapOut(BaseModel):
    """The data map (format=json); format=csv is a record of processing, fides a manifest."""

    window: DataMapWindow
    recipients: list[DataMapRecipient]
    cells: list[DataMapCell]


def _format(query: Any) -> str:
    value = query.get("format") or "json"
    if value not in FORMATS:
        raise query_error("format", f"expected one of {list(FORMATS)}")
    return value


def _days(query: Any) -> int:
    raw = query.get("days") or str(DEFAULT_DAYS)
    if not raw.isdigit() or not 1 <= int(raw) <= 366:
        raise query_error("days", "expected an integer from 1 to 366")
    return int(raw)


@routes.get(
    "/v1/datamap",
    summary="The data map: recipient x purpose x category, declared (grants) vs observed",
    roles=READERS,
    response=DataMapOut,
    query={
        "format": (
            {"type": "string", "enum": list(FORMATS)},
            "json (default); csv: a record of processing (text/csv, one row per grant); "
            'fides: a manifest {"system": [...]} of fideslang System documents',
        ),
        "days": ({"type": "integer", "minimum": 1, "maximum": 366}, "Observed window (30)"),
    },
    responses={422: "Unknown format or bad days"},
)
async def get_datamap(request: web.Request) -> DataMapOut | web.Response:
    fmt, days = _format(request.query), _days(request.query)
    async with request.app[keys.ENGINE].connect() as conn:
        datamap = await build_datamap(conn, days=days)
    if fmt == "csv":
        return web.Response(
            text=to_csv(datamap),
            content_type="text/csv",
            headers={"Content-Disposition": 'attachment; filename="sharewall-datamap.csv"'},
        )
    if fmt == "fides":
        return json_response(to_fides(datamap))
    return DataMapOut.model_validate(datamap.to_json())
