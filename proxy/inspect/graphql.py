"""GraphQL documents: arguments by name (`phone: "…"` is judged as a `phone` field) and every
string literal with the free-text rules. Variables are JSON and walked as such by the caller.
"""

from __future__ import annotations

import re

import orjson

from proxy.inspect.free_text import scan_bare_numbers, scan_string
from proxy.inspect.keys import key_info
from proxy.inspect.scan import Scan

# An executable document starts with an operation, a fragment, or a selection set.
_OPERATION = re.compile(r"\s*(?:#[^\n]*\n\s*)*(?:query|mutation|subscription|fragment)\b|\s*\{")
_STRING = r'"""(?:[^"\\]|\\.|"(?!""))*"""|"(?:[^"\\\n]|\\.)*"'
_ARGUMENT = re.compile(
    r"([_A-Za-z][_0-9A-Za-z]*)\s*:\s*(" + _STRING + r"|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)"
)
_LITERAL = re.compile(_STRING)


def looks_like_graphql(text: str) -> bool:
    """A GraphQL operation (`query {…}`, `mutation M($p: String) {…}`, `{ me { id } }`)."""
    return "{" in text and "}" in text and _OPERATION.match(text) is not None


def _literal_value(literal: str) -> str:
    if literal.startswith('"""'):
        return literal[3:-3]
    if literal.startswith('"'):
        try:
            return orjson.loads(literal)  # GraphQL string escapes are JSON's
        except orjson.JSONDecodeError:
            return literal[1:-1]
    return literal


def scan_graphql(scan: Scan, location: str, document: str, ctx: int) -> None:
    """Scan one GraphQL document found at `location` (`json:$.query`, `graphql`)."""
    from proxy.inspect.walk import walk  # walk → fields → this module

    for match in _ARGUMENT.finditer(document):
        scan.count_field()
        name, value = match[1], _literal_value(match[2])
        walk(scan, value, f"{location}.{name}", key_info(name), ctx, 1)
    for match in _LITERAL.finditer(document):
        text = _literal_value(match.group())
        scan_string(scan, location, text, is_text=True)
        scan_bare_numbers(scan, location, text)
