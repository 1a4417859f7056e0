"""Request headers: personal data an app adds (`X-MSISDN`, `X-Forwarded-For`), not credentials."""

from __future__ import annotations

from collections.abc import Iterable

from proxy.inspect.credentials import is_auth_header, split_scheme
from proxy.inspect.encoded import base64_bytes, is_text, unquote_repeated
from proxy.inspect.fields import scan_credential
from proxy.inspect.form import scan_pairs
from proxy.inspect.keys import Rule, header_key_info
from proxy.inspect.scan import Scan
from proxy.inspect.walk import walk

_CREDENTIAL_RULES = frozenset({Rule.VENDOR_CREDENTIAL, Rule.API_SECRET})

# Protocol headers carry no personal data; skipping them saves work and false positives
# (`Date`, `Content-Length`, trace ids).
_PROTOCOL_HEADERS = frozenset(
    [
        "host",
        "content-type",
        "content-length",
        "content-encoding",
        "transfer-encoding",
        "accept",
        "accept-encoding",
        "accept-language",
        "accept-charset",
        "user-agent",
        "connection",
        "keep-alive",
        "proxy-connection",
        "date",
        "cache-control",
        "pragma",
        "te",
        "trailer",
        "upgrade",
        "via",
        "expect",
        "if-match",
        "if-none-match",
        "if-modified-since",
        "if-unmodified-since",
        "if-range",
        "range",
        "origin",
        "referer",
        "traceparent",
        "tracestate",
        "baggage",
        "x-request-id",
        "x-correlation-id",
        "x-amzn-trace-id",
        "x-b3-traceid",
        "x-b3-spanid",
        "x-b3-parentspanid",
        "x-b3-sampled",
        "b3",
        "idempotency-key",
        "x-idempotency-key",
        "content-md5",
        "content-language",
        "x-sharewall-purpose",
        "x-amz-date",
        "x-amz-content-sha256",
        "sec-fetch-mode",
        "sec-fetch-site",
        "sec-fetch-dest",
    ]
)


def parse_cookie(value: str) -> list[tuple[str, str]]:
    """`Cookie: a=1; b="x%2B1"` → [("a", "1"), ("b", "x+1")] (RFC 6265 pairs, quotes removed)."""
    pairs = []
    for item in value.split(";"):
        name, eq, raw = item.partition("=")
        name = name.strip()
        if not eq or not name:
            continue
        raw = raw.strip()
        if len(raw) >= 2 and raw[0] == raw[-1] == '"':
            raw = raw[1:-1]
        pairs.append((name, unquote_repeated(raw)))
    return pairs


# Header name as sent → (its lower case, whether it is a protocol header, skipped): the same
# few names every call. Bounded: a client sending random names must not grow it forever.
_NAMES: dict[str, tuple[str, bool]] = {}
_NAMES_MAX = 1024


def header_name(name: str) -> tuple[str, bool]:
    """`name` in lower case, and True when the header is protocol (never scanned)."""
    known = _NAMES.get(name)
    if known is None:
        lower = name.lower()
        known = (
            lower,
            lower in _PROTOCOL_HEADERS or lower.startswith(("x-sharewall-", "sec-ch-")),
        )
        if len(_NAMES) >= _NAMES_MAX:
            _NAMES.clear()
        _NAMES[name] = known
    return known


def scan_headers(scan: Scan, headers: Iterable[tuple[str, str]], ctx: int) -> tuple[str, str, str]:
    """Scan header values; each finding is located as `header:<lowercase name>`.

    Cookies are scanned one by one, as `cookie:<name>`: a cookie is data the recipient gets.
    Returns what the body is read with, from the same pass: its Content-Type, its
    Content-Encoding (repeated headers joined with commas) and its `grpc-encoding`.
    """
    content_type = content_encoding = grpc_encoding = ""
    names = _NAMES
    for name, value in headers:
        known = names.get(name)
        lower, protocol = known if known is not None else header_name(name)
        if protocol:
            if lower == "content-type":
                content_type = value
            elif lower == "content-encoding":
                content_encoding = f"{content_encoding},{value}" if content_encoding else value
            continue
        if lower == "grpc-encoding":
            grpc_encoding = value
        if lower == "cookie":
            scan_pairs(scan, parse_cookie(value), "cookie", ctx)
            continue
        info = header_key_info(name)
        if info.rule in _CREDENTIAL_RULES or is_auth_header(lower, info.tokens):
            _scan_auth_header(scan, f"header:{lower}", value, ctx)
            continue
        walk(scan, value, f"header:{lower}", info, ctx, 1)
    return content_type, content_encoding, grpc_encoding


def _scan_auth_header(scan: Scan, location: str, value: str, ctx: int) -> None:
    """The recipient's credential, where its API expects it: authentication, not a data share.

    Still read: a secret of ours that is not the recipient's own (a private key, a database URL,
    another API's token), and a JWT's claims. Basic credentials are read decoded.
    """
    scheme, credential = split_scheme(value)
    if scheme == "basic":
        decoded = base64_bytes(credential)
        text = is_text(decoded) if decoded else None
        if text is not None:
            credential = text
    scan_credential(scan, location, credential, ctx, expected=True)
