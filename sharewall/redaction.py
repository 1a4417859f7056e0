"""What of a request target may be written down: the one redaction used by every output.

The decision line, the spool, the shipped record and the registry's database all store the
path a call went to. Personal data the inspection found in it (a phone number as a query
value, an e-mail address as a path segment) is replaced by its category, so a reviewer sees
`/lookup/[contact.phone_number]?country=SG` and never the number; credentials in well-known
query parameters are `REDACTED`; userinfo and the fragment are dropped.

The findings say where: `query:<key>` (decoded key, possibly followed by the location inside
the value, e.g. `query:data.b64:$.phone`), `query:*` (the key itself looked like personal
data), `path:<n>` (the n-th non-empty segment, 1-based) or `path` (no position known: every
segment that could hold an identifier is replaced).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from urllib.parse import unquote, unquote_plus

REDACTED = "REDACTED"

# Query parameters whose values are credentials (compared case-insensitively).
SECRET_PARAMS = frozenset(
    {
        "access_token",
        "api_key",
        "apikey",
        "key",
        "token",
        "signature",
        "sig",
        "password",
        "secret",
        "client_secret",
        "auth",
    }
)

_USERINFO_RE = re.compile(r"^([a-z][a-z0-9+.-]*://)[^/@]*@", re.IGNORECASE)
# A key or segment that may itself be personal data: an e-mail (@) or six digits or more
# (separators allowed), as the inspection's own key rule.
_IDENTIFIER_LIKE = re.compile(r"@|\d(?:[ ().\-]?\d){5}")
# Characters a query key's location may continue with when it points inside the value.
_KEY_CHARS = re.compile(r"[A-Za-z0-9_\-]")
MASKED_KEY = "*"
_TARGET_PARTS = ("query", "path")  # where in a call a finding's location may point


def placeholder(categories: Iterable[str]) -> str:
    """`[contact.phone_number]`, or `[a,b]` for several categories found in one place."""
    return "[" + ",".join(sorted(set(categories))) + "]"


def _locations(findings: Iterable[Mapping[str, str] | object]) -> list[tuple[str, str]]:
    out = []
    for f in findings:
        # A record's dicts first (every call's), without the Mapping (ABC) check; the category
        # is read only for a finding in the query or the path (a body's are most).
        if type(f) is dict or isinstance(f, Mapping):
            location = f.get("location") or ""
            if location.startswith(_TARGET_PARTS):
                out.append((location, f.get("category") or ""))
        else:  # a Finding-like object (category, location attributes)
            location = getattr(f, "location", "") or ""
            if location.startswith(_TARGET_PARTS):
                out.append((location, getattr(f, "category", "") or ""))
    return out


def redact_path(path: str, findings: Iterable[Mapping[str, str] | object] = ()) -> str:
    """The request target with found personal data replaced by its category (see module doc).

    `findings` are the inspection's findings (objects with `category`/`location`, or their
    dict form); only those located in the query or the path matter. Idempotent.
    """
    located = _locations(findings) if findings else []
    if not located and "?" not in path and "@" not in path and "#" not in path:
        return path  # the common case, paid on every call: nothing to strip or redact
    path = _USERINFO_RE.sub(r"\1", path)
    path = path.partition("#")[0]
    base, sep, query = path.partition("?")
    if located:
        base = _redact_segments(base, located)
    if not sep:
        return base
    return f"{base}?{_redact_query(query, located)}" if query else f"{base}?"


def redact_record_path(
    path: str, findings: Iterable[Mapping[str, str] | object], finding_locations: list[str]
) -> str:
    """`redact_path(path, findings)` for a record, whose `finding_locations` are its findings'
    `category@location` strings.

    Every call pays this, and most redact nothing: no finding in the query or the path, and
    nothing in the path to strip. Those strings say so without a Python step per finding: a
    category holds no `@`, so a location that starts with `query` or `path` puts `@query` or
    `@path` in the joined strings (one inside a location only costs the full check).
    """
    if "?" in path or "@" in path or "#" in path:
        return redact_path(path, findings)
    joined = "\n".join(finding_locations)
    if _QUERY_MARK in joined or _PATH_MARK in joined:
        return redact_path(path, findings)
    return path


_QUERY_MARK, _PATH_MARK = (f"@{part}" for part in _TARGET_PARTS)


def _redact_segments(base: str, located: list[tuple[str, str]]) -> str:
    by_index: dict[int, set[str]] = {}
    anywhere: set[str] = set()
    for location, category in located:
        if location == "path":
            anywhere.add(category)
        elif location.startswith("path:") and location[5:].isdigit():
            by_index.setdefault(int(location[5:]), set()).add(category)
    if not by_index and not anywhere:
        return base
    # An absolute-form target keeps its scheme and authority as they are.
    prefix = ""
    match = re.match(r"^[a-z][a-z0-9+.-]*://[^/]*", base, re.IGNORECASE)
    if match:
        prefix, base = match.group(0), base[match.end() :]
    parts = base.split("/")
    position = 0
    for i, raw in enumerate(parts):
        if not raw:
            continue
        position += 1
        categories = set(by_index.get(position, ()))
        if anywhere and _IDENTIFIER_LIKE.search(unquote(raw)):
            categories |= anywhere
        if categories:
            parts[i] = placeholder(categories)
    return prefix + "/".join(parts)


def _redact_query(query: str, located: list[tuple[str, str]]) -> str:
    by_key: dict[str, set[str]] = {}
    masked: set[str] = set()
    for location, category in located:
        if not location.startswith("query:"):
            continue
        key = location[6:]
        if key == MASKED_KEY or key.startswith(MASKED_KEY + ":"):
            masked.add(category)
        by_key.setdefault(key, set()).add(category)
    out = []
    for field in query.split("&"):
        if not field:
            continue
        raw_key = field.partition("=")[0]
        key = unquote_plus(raw_key)
        if key.lower() in SECRET_PARAMS:
            out.append(f"{raw_key}={REDACTED}")
            continue
        categories = _categories_of(key, by_key)
        if masked and _IDENTIFIER_LIKE.search(key):
            # The key itself was the personal data: neither it nor its value is kept.
            out.append(f"{placeholder(masked)}={placeholder(categories | masked)}")
            continue
        if categories:
            out.append(f"{raw_key}={placeholder(categories)}")
        else:
            out.append(field)
    return "&".join(out)


def _categories_of(key: str, by_key: dict[str, set[str]]) -> set[str]:
    found: set[str] = set()
    for location_key, categories in by_key.items():
        if location_key == key or (
            key and location_key.startswith(key) and not _KEY_CHARS.match(location_key[len(key)])
        ):
            found |= categories
    return found
