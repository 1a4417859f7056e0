"""Content-Encoding (gzip, deflate, br, stacked) with a decompressed-size cap, and charsets."""

from __future__ import annotations

import codecs
import zlib

from proxy.inspect.model import DECOMPRESSED_TOO_LARGE, UNDECODABLE, UNSUPPORTED_ENCODING
from proxy.inspect.scan import Scan

# Output is produced in slices of this size, so a bomb is stopped after cap + one slice of memory.
_SLICE = 64 * 1024


class DecodeError(Exception):
    """The body cannot be decoded; `code` is the problem to report."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def media_type_of(content_type: str) -> str:
    """`Application/JSON; charset=utf-8` → `application/json`."""
    return content_type.split(";", 1)[0].strip().lower()


def charset_of(content_type: str) -> str | None:
    """The `charset` parameter of a Content-Type, if any."""
    for param in content_type.split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            return value.strip().strip("'\"").lower() or None
    return None


def param_of(content_type: str, wanted: str) -> str | None:
    """Any parameter of a Content-Type (`boundary`)."""
    for param in content_type.split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == wanted:
            return value.strip().strip('"')
    return None


def decode_text(body: bytes, charset: str | None, scan: Scan) -> str:
    """Bytes to text in the declared charset (UTF-8 by default; a BOM wins); bad bytes replaced."""
    if body.startswith((b"\xff\xfe", b"\xfe\xff")):
        charset = "utf-16"
    elif body.startswith(b"\xef\xbb\xbf"):
        charset = "utf-8-sig"
    if charset:
        try:
            codecs.lookup(charset)
        except LookupError:
            scan.problem(UNDECODABLE)  # an unknown charset: we cannot claim to have read the text
            charset = None
    return body.decode(charset or "utf-8", "replace")


def decompress(body: bytes, content_encoding: str, cap: int, *, truncated: bool) -> bytes:
    """Undo every Content-Encoding (last applied first); raises `DecodeError` with a problem code."""
    codings = [c.strip().lower() for c in content_encoding.split(",") if c.strip()]
    for coding in reversed(codings):
        if coding in ("identity", ""):
            continue
        if coding in ("gzip", "x-gzip"):
            body = _inflate(body, 16 + zlib.MAX_WBITS, cap, truncated=truncated)
        elif coding == "deflate":
            # RFC 9110 deflate is zlib-wrapped; some servers send raw deflate anyway.
            try:
                body = _inflate(body, zlib.MAX_WBITS, cap, truncated=truncated)
            except DecodeError as error:
                if error.code != UNDECODABLE:
                    raise
                body = _inflate(body, -zlib.MAX_WBITS, cap, truncated=truncated)
        elif coding == "br":
            body = _unbrotli(body, cap, truncated=truncated)
        else:
            raise DecodeError(UNSUPPORTED_ENCODING)
    return body


def _inflate(data: bytes, wbits: int, cap: int, *, truncated: bool) -> bytes:
    out = bytearray()
    while data:
        inflater = zlib.decompressobj(wbits)
        try:
            pending = data
            while pending:
                out += inflater.decompress(pending, _SLICE)
                if len(out) > cap:
                    raise DecodeError(DECOMPRESSED_TOO_LARGE)
                pending = inflater.unconsumed_tail
            if not inflater.eof:
                out += inflater.flush()
                if len(out) > cap:
                    raise DecodeError(DECOMPRESSED_TOO_LARGE)
        except zlib.error as error:
            raise DecodeError(UNDECODABLE) from error
        if not inflater.eof:
            if truncated:
                break  # the proxy stopped reading: the tail is missing, not corrupt
            raise DecodeError(UNDECODABLE)
        data = inflater.unused_data  # gzip allows several members back to back
        if wbits < 0 or wbits == zlib.MAX_WBITS:
            break
    return bytes(out)


def _unbrotli(data: bytes, cap: int, *, truncated: bool) -> bytes:
    # Imported by the first brotli body (~0.2 MB with its library; most bodies are not).
    import brotli

    decoder = brotli.Decompressor()
    out = bytearray()
    try:
        out += decoder.process(data, output_buffer_limit=_SLICE)
        while len(out) <= cap and not decoder.can_accept_more_data():
            out += decoder.process(b"", output_buffer_limit=_SLICE)
    except brotli.error as error:
        raise DecodeError(UNDECODABLE) from error
    if len(out) > cap:
        raise DecodeError(DECOMPRESSED_TOO_LARGE)
    if not decoder.is_finished() and not truncated:
        raise DecodeError(UNDECODABLE)
    return bytes(out)
