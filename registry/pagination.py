"""Keyset pagination, the one helper every list route uses: limits, opaque cursors, pages.

A list query fetches `limit + 1` rows after the cursor's key; `page()` keeps `limit` of them
and, when there were more, makes the next cursor from the last kept row's key. So a page never
repeats or skips a row while new ones arrive, and the last page has no cursor.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import orjson

from registry.query import query_error

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000

T = TypeVar("T")


def encode_cursor(value: Any) -> str:
    """Encode the sort key of the last row of a page."""
    return base64.urlsafe_b64encode(orjson.dumps(value)).decode().rstrip("=")


def decode_cursor(cursor: str, check: Callable[[Any], bool] = lambda _: True) -> Any:
    """Decode a cursor of `encode_cursor` whose value passes `check`; else 422 naming `cursor`."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value = orjson.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (ValueError, binascii.Error, orjson.JSONDecodeError, UnicodeEncodeError):
        value = _INVALID
    if value is _INVALID or not check(value):
        raise query_error("cursor", "not a cursor returned by this API; pass it back unchanged")
    return value


_INVALID = object()


def parse_limit(raw: str | None) -> int:
    """`limit` query parameter: 1..MAX_LIMIT, default DEFAULT_LIMIT."""
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise query_error("limit", f"expected an integer from 1 to {MAX_LIMIT}")
    return int(raw)


def page(rows: Sequence[T], limit: int, key: Callable[[T], Any]) -> tuple[list[T], str | None]:
    """The first `limit` of `rows` (fetched as `limit + 1`) and the cursor after them, or None."""
    kept = list(rows[:limit])
    return kept, (encode_cursor(key(kept[-1])) if len(rows) > limit else None)
