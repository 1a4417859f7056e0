"""`application/x-www-form-urlencoded` bodies and URL query strings (bracket keys included)."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl

from proxy.inspect.free_text import scan_string
from proxy.inspect.keys import MASK, Ctx, is_identifier_like, key_info, sibling_context
from proxy.inspect.model import TOO_MANY_FIELDS
from proxy.inspect.scan import Scan
from proxy.inspect.walk import walk

_SEGMENTS = re.compile(r"[^\[\]]+")


def _segments(key: str) -> list[str]:
    # `user[phone]` → ["user", "phone"]; `to[0]` → ["to", "0"]; `to[]` → ["to"].
    return _SEGMENTS.findall(key) or [key]


def scan_pairs(scan: Scan, pairs: list[tuple[str, str]], prefix: str, ctx: int) -> None:
    """Scan decoded (key, value) pairs; a key's context is its bracket parents and all sibling keys."""
    names = []
    for key, _ in pairs:
        named = [s for s in _segments(key) if not s.isdigit()]
        # A key that is itself an identifier is shown and classified as `*` (see keys.MASK).
        names.append([MASK if is_identifier_like(s) else s for s in named] or [MASK])
    siblings = sibling_context(tuple(n[-1] for n in names))
    for (key, value), named in zip(pairs, names, strict=True):
        if is_identifier_like(key):
            scan_string(scan, f"{prefix}:{MASK}", key, is_text=False)
            key = MASK
        field_ctx = ctx | siblings
        for parent in named[:-1]:
            field_ctx |= key_info(parent).parent_flags
        if any(key_info(parent).parent_flags & Ctx.NOT_PERSON for parent in named[:-1]):
            field_ctx &= ~Ctx.PERSON
        walk(scan, value, f"{prefix}:{key}", key_info(named[-1]), field_ctx, len(named))


def parse_pairs(text: str, scan: Scan, encoding: str = "utf-8") -> list[tuple[str, str]]:
    """Decode a query string / form body; `+` is a space, as browsers and Twilio's SDKs send it."""
    try:
        pairs = parse_qsl(text, keep_blank_values=True, encoding=encoding, errors="replace")
    except LookupError:  # an unknown charset (already reported by decode_text)
        pairs = parse_qsl(text, keep_blank_values=True, errors="replace")
    if len(pairs) > scan.limits.max_fields:
        scan.problem(TOO_MANY_FIELDS)
        pairs = pairs[: scan.limits.max_fields]
    return pairs


def scan_form(scan: Scan, text: str, ctx: int, *, encoding: str = "utf-8") -> None:
    """Scan a form body: each field is located as `form:<key as sent>`."""
    scan_pairs(scan, parse_pairs(text, scan, encoding), "form", ctx)
