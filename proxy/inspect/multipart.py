"""`multipart/form-data` bodies: fields by name, JSON/XML/text parts by their own type."""

from __future__ import annotations

import re
from dataclasses import dataclass

from proxy.inspect import categories as cat
from proxy.inspect.decode import charset_of, decode_text, media_type_of
from proxy.inspect.json_body import scan_json
from proxy.inspect.keys import MASK, Ctx, is_identifier_like, key_info, sibling_context
from proxy.inspect.model import MALFORMED_MULTIPART
from proxy.inspect.scan import Scan
from proxy.inspect.text import scan_text
from proxy.inspect.walk import walk
from proxy.inspect.xml_body import scan_xml

_DISPOSITION_PARAM = re.compile(r';\s*([A-Za-z*]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;]*))')
_BINARY_PREFIXES = (
    "image/",
    "video/",
    "font/",
    "application/octet-stream",
    "application/pdf",
    "application/zip",
    "application/gzip",
)


@dataclass(slots=True)
class Part:
    name: str
    filename: str | None
    content_type: str
    body: bytes


class MalformedMultipart(ValueError):
    """The body does not follow RFC 7578 (no boundary, no closing delimiter, a part without name)."""


def split_parts(body: bytes, boundary: str) -> list[Part]:
    """Split a multipart body into its parts; raises `MalformedMultipart`."""
    if not boundary or len(boundary) > 200:
        raise MalformedMultipart("boundary")
    delimiter = b"--" + boundary.encode("latin-1")
    chunks = body.split(delimiter)
    if len(chunks) < 3:
        raise MalformedMultipart("no parts")
    if not chunks[-1].startswith(b"--"):
        raise MalformedMultipart("no closing delimiter")
    parts = []
    for chunk in chunks[1:-1]:
        chunk = chunk.removeprefix(b"\r\n").removeprefix(b"\n")
        head, sep, content = chunk.partition(b"\r\n\r\n")
        if not sep:
            head, sep, content = chunk.partition(b"\n\n")
        if not sep:
            raise MalformedMultipart("part without headers")
        headers = {}
        for line in head.decode("utf-8", "replace").splitlines():
            name, colon, value = line.partition(":")
            if colon:
                headers[name.strip().lower()] = value.strip()
        disposition = headers.get("content-disposition", "")
        params = {
            m[1].lower(): m[2] if m[2] is not None else m[3].strip()
            for m in _DISPOSITION_PARAM.finditer(disposition)
        }
        if not disposition.lower().startswith("form-data") or "name" not in params:
            raise MalformedMultipart("part without a form-data name")
        if content.endswith(b"\r\n"):
            content = content[:-2]
        elif content.endswith(b"\n"):
            content = content[:-1]
        parts.append(
            Part(params["name"], params.get("filename"), headers.get("content-type", ""), content)
        )
    return parts


def scan_multipart(scan: Scan, body: bytes, boundary: str | None, ctx: int) -> None:
    """Scan each part: located as `multipart:<name>` (structured parts add their own path)."""
    try:
        parts = split_parts(body, boundary or "")
    except MalformedMultipart:
        scan.problem(MALFORMED_MULTIPART)
        scan_text(scan, body.decode("utf-8", "replace"), is_text=False)
        return
    siblings = sibling_context(tuple(p.name for p in parts))
    for part in parts:
        scan.count_field()
        location = f"multipart:{MASK if is_identifier_like(part.name) else part.name}"
        media = media_type_of(part.content_type)
        if media.startswith("audio/"):
            scan.add(cat.CONTENT, location, "multipart:audio")  # a recording or voicemail
            continue
        if media.startswith(_BINARY_PREFIXES):
            continue
        text = decode_text(part.body, charset_of(part.content_type), scan)
        if media.endswith(("/json", "+json")) or media == "application/x-ndjson":
            scan_json(scan, text, ctx | siblings, root=f"{location}:json:$")
        elif media.endswith(("/xml", "+xml")):
            scan_xml(scan, text, ctx | siblings, prefix=f"{location}:xml:")
        elif part.filename is not None:
            scan_text(scan, text, location=location)
        else:
            walk(scan, text, location, key_info(part.name), ctx | siblings | Ctx.TOP, 1)
