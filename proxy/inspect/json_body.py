"""JSON bodies: a document, NDJSON (one document a line), or malformed JSON scanned as text."""

from __future__ import annotations

import orjson

from proxy.inspect.keys import Ctx
from proxy.inspect.model import MALFORMED_JSON, TOO_DEEP
from proxy.inspect.scan import Scan
from proxy.inspect.text import scan_text
from proxy.inspect.walk import walk

_BOM = b"\xef\xbb\xbf"


def scan_json(
    scan: Scan,
    data: bytes | str,
    ctx: int,
    *,
    root: str = "json:$",
    declared: bool = True,
) -> bool:
    """Scan a JSON body; False when it is not JSON and was not declared JSON (nothing scanned).

    Declared JSON that does not parse is scanned as text and reported `malformed_json`.
    """
    if data[:3] == _BOM:  # (a str's first three characters are never equal to bytes)
        data = data[len(_BOM) :]
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError as error:
        if "depth limit" in str(error):  # orjson refuses nesting past 1024 levels
            scan.problem(TOO_DEEP)
            _as_text(scan, data, root, malformed=False)
            return True
        if _scan_ndjson(scan, data, ctx, root):
            return True
        if not declared:
            return False
        _as_text(scan, data, root, malformed=True)
        return True
    walk(scan, document, root, None, ctx | Ctx.ROOT, 0)
    return True


def _scan_ndjson(scan: Scan, data: bytes | str, ctx: int, root: str) -> bool:
    lines = data.splitlines()
    if len(lines) < 2:
        return False
    documents = []
    for line in lines:
        if not line.strip():
            continue
        try:
            documents.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            return False
    prefix = root.removesuffix(":$").replace("json", "ndjson", 1)
    for number, document in enumerate(documents):
        walk(scan, document, f"{prefix}:{number}:$", None, ctx | Ctx.ROOT, 0)
    return True


def _as_text(scan: Scan, data: bytes | str, root: str, *, malformed: bool) -> None:
    if malformed:
        scan.problem(MALFORMED_JSON)
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    location = "text" if root == "json:$" else root.removesuffix(":json:$") + ":text"
    scan_text(scan, text, location=location)
