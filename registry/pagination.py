"""Opaque cursors for keyset pagination (base64url of a small JSON value)."""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson

from registry.errors import ApiError

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


def encode_cursor(value: Any) -> str:
    """Encode the sort key of the last row of a page."""
    return base64.urlsafe_b64encode(orjson.dumps(value)).decode().rstrip("=")


def decode_cursor(cursor: str) -> Any:
    """Decode a cursor from `encode_cursor`; a tampered or foreign one is a 400 problem."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        return orjson.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (ValueError, binascii.Error, orjson.JSONDecodeError, UnicodeEncodeError):
        raise ApiError(
            400, "bad-cursor", "Invalid cursor", "pass back a cursor unchanged"
        ) from None


def parse_limit(raw: str | None) -> int:
    """`limit` query parameter: 1..MAX_LIMIT, default DEFAULT_LIMIT."""
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_LIMIT:
        raise ApiError(
            422,
            "validation-error",
            "Invalid query parameter",
            f"limit: must be an integer from 1 to {MAX_LIMIT}",
            {"errors": [{"field": "limit", "message": f"must be 1..{MAX_LIMIT}"}]},
        )
    return limit
