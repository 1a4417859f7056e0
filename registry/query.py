"""Query parameters shared by the list routes: one parser per kind, one error shape (422)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from registry.errors import ApiError


def query_error(field: str, message: str) -> ApiError:
    """422 naming a query parameter."""
    return ApiError(
        422,
        "validation-error",
        "Invalid query parameter",
        f"{field}: {message}",
        {"errors": [{"field": field, "message": message}]},
    )


def parse_time(query: Mapping[str, str], name: str) -> datetime | None:
    """An ISO 8601 query parameter as aware UTC (naive means UTC); 422 when unparseable."""
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    try:
        # A '+' of an offset arrives as a space when the client did not escape it.
        value = datetime.fromisoformat(raw.replace("Z", "+00:00").replace(" ", "+"))
    except ValueError:
        raise query_error(name, "expected an ISO 8601 time, e.g. 2026-11-28T10:00:00Z") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
