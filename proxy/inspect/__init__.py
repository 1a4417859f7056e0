"""Payload inspection: find personal data in an outbound call (URL, headers, body), never its values.

`inspect_call()` is the one entry point. It is synchronous, pure and CPU-bound, and never raises:
a bug inside ends in the `inspector_error` problem (`Inspection.fault`), which `decide()` turns
into a fault decision: the call fails closed with a 503, not a policy denial.

Layout: formats (`query`, `headers`, `json_body`, `form`, `multipart`, `xml_body`, `text`, and
`decode` for Content-Encoding and charsets) turn a call into fields; `walk` keeps each field's
context (its parents, its siblings); `fields` judges a key and its value together with the tables
of `keys`; value detectors live per family (`phone`, `identifiers`, `network`, `credentials`,
`free_text`); `scan` collects findings and spends the limits; `categories` holds the category ids,
checked against the taxonomy on import. `native` installs the optional C fast path (`_native.c`:
the walker's loops and a pre-scan of strings, same findings) when it was built at install;
`SHAREWALL_INSPECT_NATIVE=0` keeps inspection in pure Python.
"""

from __future__ import annotations

import traceback
from collections.abc import Mapping, Sequence

import structlog

from proxy.inspect.decode import (
    DecodeError,
    charset_of,
    decode_text,
    decompress,
    media_type_of,
    param_of,
)
from proxy.inspect.encoded import (
    decode_base64_text,
    enter_layer,
    inflate_magic,
    inflate_raw,
    is_base64_body,
    is_text,
)
from proxy.inspect.form import scan_form
from proxy.inspect.graphql import scan_graphql
from proxy.inspect.headers import scan_headers
from proxy.inspect.json_body import scan_json
from proxy.inspect.keys import Ctx
from proxy.inspect.model import (
    BODY_TOO_LARGE,
    DEFAULT_LIMITS,
    INSPECTOR_ERROR,
    TOO_DEEP,
    Finding,
    Inspection,
    InspectionLimits,
)
from proxy.inspect.multipart import scan_multipart
from proxy.inspect.native import enabled_by_environment, install
from proxy.inspect.protobuf import is_protobuf_media, scan_protobuf
from proxy.inspect.query import UrlPlan, scan_url, url_plan
from proxy.inspect.scan import Scan, ScanStopped
from proxy.inspect.text import scan_text
from proxy.inspect.xml_body import scan_xml

__all__ = ["DEFAULT_LIMITS", "Finding", "Inspection", "InspectionLimits", "inspect_call"]

log = structlog.get_logger("sharewall.inspect")

install(enabled_by_environment())  # the native fast path, when built (see native.py)

_UTF8_NAMES = frozenset({None, "utf-8", "utf8", "us-ascii", "ascii"})


def inspect_call(
    method: str,
    url: str,
    headers: Sequence[tuple[str, str]] | Mapping[str, str],
    body: bytes,
    *,
    limits: InspectionLimits = DEFAULT_LIMITS,
    body_truncated: bool = False,
) -> Inspection:
    """Inspect one call and return its findings (category, location, detector) and problems.

    `body_truncated` says the proxy stopped reading the body at its limit (`body_too_large`).
    """
    scan: Scan | None = None
    try:
        scan = Scan(limits, url)
        plan = url_plan(url, scan.regions)
        scan.mobile_call = plan.mobile
        # The proxy's list as it is (nothing changes it); a mapping's or another iterable's pairs.
        if type(headers) is list:
            pairs = headers
        else:
            pairs = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
        try:
            _inspect(scan, plan, pairs, body, body_truncated=body_truncated)
        except ScanStopped:
            pass  # the limit that stopped the scan is already a problem
        except RecursionError:
            scan.problem(TOO_DEEP)
        return scan.result()
    except Exception as error:
        # The message of an exception may quote a value; log only where it happened.
        frame = traceback.extract_tb(error.__traceback__)[-1] if error.__traceback__ else None
        log.error(
            "inspect.error",
            error_type=type(error).__name__,
            where=f"{frame.filename}:{frame.lineno}" if frame else None,
            method=method,
        )
        findings = scan.result().findings if scan is not None else ()
        return Inspection(findings=findings, problems=(INSPECTOR_ERROR,))


def _inspect(
    scan: Scan,
    plan: UrlPlan,
    headers: list[tuple[str, str]],
    body: bytes,
    *,
    body_truncated: bool,
) -> None:
    root = Ctx.MOBILE if scan.mobile_call else Ctx.NONE
    scan_url(scan, plan, root)
    content_type, content_encoding, scan.grpc_encoding = scan_headers(scan, headers, root)
    if not body:
        if body_truncated:
            scan.problem(BODY_TOO_LARGE)
        return
    if body_truncated or len(body) > scan.limits.max_body_bytes:
        scan.problem(BODY_TOO_LARGE)
        body = body[: scan.limits.max_body_bytes]
    if content_encoding:
        try:
            body = decompress(
                body, content_encoding, scan.limits.max_decompressed_bytes, truncated=body_truncated
            )
        except DecodeError as error:
            scan.problem(error.code)
            return
    _scan_body(scan, body, content_type, root, truncated=body_truncated)


# Declared compressed media (a file, not a Content-Encoding): the content type of what is inside
# is unknown, so it is sniffed.
_BROTLI_MEDIA = frozenset({"application/x-brotli", "application/brotli", "application/x-br"})
_DEFLATE_MEDIA = frozenset({"application/zlib", "application/x-deflate", "application/deflate"})
_GZIP_MEDIA = frozenset({"application/gzip", "application/x-gzip"})
_OPAQUE_MEDIA = _BROTLI_MEDIA | _DEFLATE_MEDIA | _GZIP_MEDIA | {"", "application/octet-stream"}
# Media whose bytes are their own format: never tried as raw deflate.
_BINARY_MEDIA_PREFIXES = (
    "image/",
    "video/",
    "audio/",
    "font/",
    "application/pdf",
    "application/zip",
)


# Content-Type as sent → (media type, charset, how the body is read): the same few values every
# call, worked out once. Bounded: multipart boundaries differ call after call.
_MEDIA: dict[str, tuple[str, str | None, str]] = {}
_MEDIA_MAX = 256
# First bytes of a body as it is (JSON, XML): no compression magic and no base64 start with them.
_PLAIN_HEADS = frozenset({b"{", b"[", b"<"})
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


def _media_of(content_type: str) -> tuple[str, str | None, str]:
    media = media_type_of(content_type)
    if is_protobuf_media(media):
        kind = "protobuf"
    elif media == "application/graphql":
        kind = "graphql"
    elif media.endswith(("/json", "+json")) or media in (
        "application/x-ndjson",
        "application/jsonl",
    ):
        kind = "json"
    elif media == "application/x-www-form-urlencoded":
        kind = "form"
    elif media == "multipart/form-data":
        kind = "multipart"
    elif media.endswith(("/xml", "+xml")):
        kind = "xml"
    elif media.startswith("text/"):
        kind = "text"
    else:
        kind = "unlabelled"
    known = (media, charset_of(content_type), kind)
    if type(content_type) is str:
        if len(_MEDIA) >= _MEDIA_MAX:
            _MEDIA.clear()
        _MEDIA[content_type] = known
    return known


def _scan_body(scan: Scan, body: bytes, content_type: str, ctx: int, *, truncated: bool) -> None:
    # Plain strings only: a subclass is parsed by its own methods (a test's broken one, too).
    known = _MEDIA.get(content_type) if type(content_type) is str else None
    media, charset, kind = known if known is not None else _media_of(content_type)
    if kind == "protobuf":
        scan_protobuf(scan, body, media, scan.grpc_encoding, ctx)
        return
    if (
        not truncated
        # A JSON or XML body as it is, under a type that says what it is, holds no wrapping.
        and (body[:1] not in _PLAIN_HEADS or media in _OPAQUE_MEDIA)
        and _scan_wrapped_body(scan, body, content_type, media, ctx)
    ):
        return
    if kind == "json":
        data: bytes | str = body
        if charset not in _UTF8_NAMES or body[:2] in _UTF16_BOMS:
            data = decode_text(body, charset, scan)
        # A body cut at the size limit is not malformed, just short: scan what arrived as text.
        if not scan_json(scan, data, ctx, declared=not truncated):
            scan_text(scan, decode_text(body, charset, scan))
    elif kind == "form":
        scan_form(scan, decode_text(body, charset, scan), ctx, encoding=charset or "utf-8")
    elif kind == "multipart":
        scan_multipart(scan, body, param_of(content_type, "boundary"), ctx)
    elif kind == "xml":
        scan_xml(scan, decode_text(body, charset, scan) if charset else body, ctx)
    elif kind == "text":
        scan_text(scan, decode_text(body, charset, scan))
    elif kind == "graphql":
        scan_graphql(scan, "graphql", decode_text(body, charset, scan), ctx)
    else:
        _scan_unlabelled(scan, body, charset, ctx)


def _scan_wrapped_body(scan: Scan, body: bytes, content_type: str, media: str, ctx: int) -> bool:
    """A body compressed or base64-encoded without saying so: scan what it holds. True if it was.

    Gzip and zlib are known by their magic bytes, brotli and deflate only when their media type
    declares them, raw deflate only in an opaque body that inflates cleanly into text.
    """
    cap = scan.limits.max_decompressed_bytes
    inner: bytes | None = None
    try:
        if media in _BROTLI_MEDIA:
            inner = decompress(body, "br", cap, truncated=False)
        elif media in _DEFLATE_MEDIA:
            inner = decompress(body, "deflate", cap, truncated=False)
        else:
            inner = inflate_magic(body, cap)
            if (
                inner is None
                and media in _OPAQUE_MEDIA
                and not media.startswith(_BINARY_MEDIA_PREFIXES)
                and is_text(body[:4096]) is None
            ):
                inner = inflate_raw(body, cap)
    except DecodeError as error:
        scan.problem(error.code)
        return True
    inner_type = "" if media in _OPAQUE_MEDIA else content_type
    if inner is None and media != "multipart/form-data" and is_base64_body(body):
        text = decode_base64_text(body, cap)
        if text is not None:
            inner, inner_type = text.encode(), ""
    if inner is None:
        return False
    if enter_layer(scan):
        try:
            _scan_body(scan, inner, inner_type, ctx, truncated=False)
        finally:
            scan.layers -= 1
    return True


def _scan_unlabelled(scan: Scan, body: bytes, charset: str | None, ctx: int) -> None:
    # No (or an opaque) content type: try what the bytes look like; never trust the label alone.
    head = body.lstrip()[:1]
    if head in (b"{", b"[") and scan_json(scan, body, ctx, declared=False):
        return
    if head == b"<":
        scan_xml(scan, decode_text(body, charset, scan), ctx)
        return
    text = body.decode(charset or "utf-8", "replace") if charset else body.decode("latin-1")
    if "=" in text and " " not in text.strip() and "\n" not in text.strip():
        scan_form(scan, text, ctx)
        return
    scan_text(scan, text, is_text=False)
