"""Content hidden by an encoding: compressed bodies without Content-Encoding, base64 / base64url
strings, JWT payloads, repeated percent-encoding, invisible format characters.

Each decoder is gated by a cheap test (magic bytes, alphabet and length) and its result is only
kept when it is sure: a stream that inflates to its end, bytes that decode to text or JSON. A
random id, a digest or an image never decodes to text, so it is never read as anything else.
Decoding nests (base64 of gzip of JSON) up to `MAX_LAYERS`; past it the scan is incomplete.
"""

from __future__ import annotations

import base64
import binascii
import re
import zlib
from urllib.parse import unquote

import orjson

from proxy.inspect.decode import DecodeError, decompress
from proxy.inspect.model import TOO_DEEP, UNDECODABLE
from proxy.inspect.scan import Scan

# How many encodings may wrap one another (base64 of gzip of base64 of JSON is three).
MAX_LAYERS = 4
# Shorter base64 is 11 bytes or less: too short to hide a document, long enough to be any id.
MIN_BASE64 = 16
# A base64 field longer than this is a file, not a value someone wrapped (scanned as bytes).
MAX_BASE64_FIELD = 1 << 20

GZIP_MAGIC = b"\x1f\x8b\x08"
# Unicode format characters (category Cf) and other invisibles people put between digits:
# soft hyphen, Arabic letter mark, Mongolian vowel separator, zero-width space/joiners, LRM/RLM,
# bidi embeddings and isolates, word joiner and invisible operators, BOM, interlinear marks, tags.
_INVISIBLE_RANGES = (
    (0x00AD, 0x00AD),
    (0x0600, 0x0605),
    (0x061C, 0x061C),
    (0x06DD, 0x06DD),
    (0x070F, 0x070F),
    (0x180E, 0x180E),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x2064),
    (0x2066, 0x206F),
    (0xFEFF, 0xFEFF),
    (0xFFF9, 0xFFFB),
    (0xE0001, 0xE0001),
    (0xE0020, 0xE007F),
)
_INVISIBLE_TABLE = {cp: None for lo, hi in _INVISIBLE_RANGES for cp in range(lo, hi + 1)}

_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")
_BASE64URL = re.compile(r"[A-Za-z0-9_\-]+={0,2}")
_BASE64_BYTES = re.compile(rb"[A-Za-z0-9+/_\-\r\n]+={0,2}\s*")
# Text: no control characters but tab, CR and LF.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_CONTROL_BYTES = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_PEEK = 64  # characters of base64 (48 bytes) looked at before decoding a long value
LONG_BASE64 = 2 * _PEEK  # longer values are judged by their head first (`binary_head`)
_PERCENT = re.compile(r"%[0-9A-Fa-f]{2}")
JWT_SHAPE = re.compile(r"eyJ[A-Za-z0-9_\-]{2,}\.(eyJ[A-Za-z0-9_\-]{2,})\.[A-Za-z0-9_\-]*")


def strip_invisible(text: str) -> str:
    """`+65\u200b9123\u200b4567` → `+6591234567`: format characters removed (ASCII untouched)."""
    return text if text.isascii() else text.translate(_INVISIBLE_TABLE)


def unquote_repeated(text: str) -> str:
    """Undo percent-encoding applied more than once (`%252B65…` → `+65…`), `MAX_LAYERS` at most."""
    for _ in range(MAX_LAYERS):
        if "%" not in text or _PERCENT.search(text) is None:
            break
        text = unquote(text, errors="replace")
    return text


def is_text(data: bytes) -> str | None:
    """`data` as text when it is UTF-8 without control characters; None for binary."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not text.strip() or _CONTROL.search(text) is not None:
        return None
    return text


def looks_base64(value: str) -> bool:
    """The cheap gate: long enough, one base64 alphabet, at most two `=` of padding."""
    if len(value) < MIN_BASE64 or len(value) > MAX_BASE64_FIELD:
        return False
    # Substring tests in C first: text has spaces, URLs and e-mails colons, dots or `@`.
    if " " in value or "." in value or ":" in value or "@" in value:
        return False
    return _BASE64.fullmatch(value) is not None or _BASE64URL.fullmatch(value) is not None


def base64_bytes(value: str | bytes) -> bytes | None:
    """The bytes of a base64 or base64url string (padding optional); None when it is not one."""
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    value = "".join(value.split())
    stripped = value.rstrip("=")
    if len(stripped) % 4 == 1:
        return None  # no base64 string has this length
    padded = stripped + "=" * (-len(stripped) % 4)
    try:
        if "-" in padded or "_" in padded:
            if "+" in padded or "/" in padded:
                return None
            return base64.urlsafe_b64decode(padded)
        # What base64.b64decode(padded, validate=True) does, without its Python wrapper: a str
        # with a character outside ASCII is a ValueError either way.
        return binascii.a2b_base64(padded, strict_mode=True)
    except (binascii.Error, ValueError):
        return None


def inflate_magic(data: bytes, cap: int) -> bytes | None:
    """`data` inflated when it starts with gzip's or zlib's magic and inflates cleanly; else None.

    Raises `DecodeError` for a gzip stream (three magic bytes: sure enough) that does not inflate
    within `cap` or at all; a zlib header is two bytes with a checksum, so a failure there only
    means the bytes were not zlib.
    """
    if data.startswith(GZIP_MAGIC):
        return decompress(data, "gzip", cap, truncated=False)
    if len(data) > 2 and data[0] == 0x78 and (data[0] * 256 + data[1]) % 31 == 0:
        try:
            return decompress(data, "deflate", cap, truncated=False)
        except DecodeError as error:
            if error.code != UNDECODABLE:
                raise
    return None


def inflate_raw(data: bytes, cap: int) -> bytes | None:
    """Raw deflate (no header, no magic): kept only when it inflates to its end into text."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, cap + 1)
    except zlib.error:
        return None
    if not inflater.eof or inflater.unused_data or inflater.unconsumed_tail or len(out) > cap:
        return None
    return out if is_text(out) is not None else None


def binary_head(value: str) -> bool:
    """A long value whose first 48 bytes are no base64 of text or gzip: `decode_base64_text` is None.

    An id or a blob shows it is binary in its first bytes: no need to decode, or even check the
    alphabet of, the rest. Only asked of values longer than `LONG_BASE64`.
    """
    head = base64_bytes(value[:_PEEK])
    return head is None or (
        not head.startswith(GZIP_MAGIC) and _CONTROL_BYTES.search(head) is not None
    )


def decode_base64_text(value: str | bytes, cap: int) -> str | None:
    """The text (or JSON) a base64 / base64url string stands for, gzip inside undone; else None."""
    if isinstance(value, str) and len(value) > LONG_BASE64 and binary_head(value):
        return None
    data = base64_bytes(value)
    if not data:
        return None
    try:
        inflated = inflate_magic(data, cap)
    except DecodeError:
        return None  # base64 of a broken stream: an opaque blob, like any other
    return is_text(inflated if inflated is not None else data)


def jwt_claims(token: str) -> object | None:
    """The decoded payload (claims) of a JWT `header.payload.signature`; None if it is not one."""
    match = JWT_SHAPE.fullmatch(token.strip())
    if match is None:
        return None
    data = base64_bytes(match[1])
    if data is None:
        return None
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return None


def is_base64_body(body: bytes) -> bool:
    """A whole body that is one base64 text (a payload wrapped for transport)."""
    if len(body) < MIN_BASE64 or body[:1] in (b"{", b"[", b"<"):
        return False
    return _BASE64_BYTES.fullmatch(body.strip()) is not None


def enter_layer(scan: Scan) -> bool:
    """Count one more decoding layer; False (and `too_deep`) past `MAX_LAYERS`.

    The caller runs its nested scan, then `scan.layers -= 1` in a `finally`.
    """
    if scan.layers >= MAX_LAYERS:
        scan.problem(TOO_DEEP)
        return False
    scan.layers += 1
    return True
