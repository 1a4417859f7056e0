"""`Sharewall-Token-Expires`: the registry's word that a bearer token stops authenticating.

The registry sends it on every answer to a request made with a token that expires (a rotated
token's old secret, in its grace); a proxy reads it to warn before it is refused. The value is
RFC 3339 UTC to the second, `2026-11-30T09:00:00Z`: written and read here only.
"""

from __future__ import annotations

from datetime import UTC, datetime

TOKEN_EXPIRES_HEADER = "Sharewall-Token-Expires"  # noqa: S105 - a header name, not a secret


def format_expiry(when: datetime) -> str:
    """The header's value for `when` (aware)."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_expiry(value: str) -> datetime | None:
    """The time a header value names (aware UTC), or None if it is not RFC 3339 with a zone."""
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return when.astimezone(UTC) if when.tzinfo is not None else None
