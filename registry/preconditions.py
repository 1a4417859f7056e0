"""`If-Match` (RFC 9110 §13.1.1) against the registry's versions: one parser, one check.

An entity's ETag is its version, sent strong (`"3"`). `If-Match` is `*` or a list of
entity-tags; it holds when `*` and the entity exists, or when one tag is, by strong
comparison, the current ETag: a weak tag (`W/"3"`) never matches, nor does a tag naming
something that is not a version. A header that is not that grammar is a 400.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from registry.errors import ApiError

# One list element: optional `W/`, then a quoted opaque tag (etagc: %x21 / %x23-7E / obs-text;
# a comma may sit inside the quotes), then a comma or the end.
_ELEMENT = re.compile(r'\s*(W/)?"([\x21\x23-\x7e\x80-\xff]*)"\s*(?:,|$)')
_EMPTY_ELEMENT = re.compile(r"\s*,")


@dataclass(frozen=True)
class IfMatch:
    """A parsed `If-Match`: `*` (`is_any`), or the versions its strong tags name (`versions`)
    and the header as sent (`raw`, for messages)."""

    raw: str
    versions: frozenset[int] = frozenset()
    is_any: bool = False

    def admits(self, version: int) -> bool:
        """True when the entity at `version` satisfies the condition (strong comparison)."""
        return self.is_any or version in self.versions


def bad_if_match() -> ApiError:
    """400: an `If-Match` that is not `*` nor a list of quoted entity-tags."""
    return ApiError(
        400,
        "bad-if-match",
        "Invalid If-Match",
        'expected * or a list of entity-tags like "3" (RFC 9110 §13.1.1)',
    )


def parse_if_match(raw: str | None) -> IfMatch | None:
    """The `If-Match` of a request (its field lines joined with `, `), or None when absent.

    Raises `bad_if_match()` on a malformed header; weak and non-version tags parse, and
    never match.
    """
    if raw is None:
        return None
    if raw.strip() == "*":
        return IfMatch(raw=raw, is_any=True)
    versions: set[int] = set()
    position, tags = 0, 0
    while position < len(raw):
        empty = _EMPTY_ELEMENT.match(raw, position)
        if empty:  # `#rule` lists may carry empty elements
            position = empty.end()
            continue
        if not raw[position:].strip():
            break
        element = _ELEMENT.match(raw, position)
        if element is None:
            raise bad_if_match()
        weak, opaque = element.group(1), element.group(2)
        tags += 1
        if not weak and opaque.isascii() and opaque.isdigit() and len(opaque) <= 18:
            versions.add(int(opaque))
        position = element.end()
    if not tags:
        raise bad_if_match()
    return IfMatch(raw=raw, versions=frozenset(versions))


def check_version(expected: IfMatch | None, current: int, what: str) -> None:
    """412 `version-mismatch` when `expected` is given and does not admit `current`."""
    if expected is None or expected.admits(current):
        return
    weak = " (a weak tag never matches)" if "W/" in expected.raw else ""
    raise ApiError(
        412,
        "version-mismatch",
        "Precondition failed",
        f"{what} is at version {current}, not {expected.raw.strip()[:200]}{weak}; reload and retry",
        {"current_version": current},
    )


def require_version(expected: IfMatch | None, what: str) -> IfMatch:
    """428 when a review names no version: a reviewer approves the version they looked at,
    so neither a missing `If-Match` nor `If-Match: *` will do."""
    if expected is None or expected.is_any:
        raise ApiError(
            428,
            "precondition-required",
            "Precondition required",
            f"approving {what} needs If-Match with the ETag of the version you reviewed "
            '(GET it, then send If-Match: "<version>"; * names no version)',
        )
    return expected
