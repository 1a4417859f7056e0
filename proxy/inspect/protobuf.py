"""Protocol Buffers and gRPC bodies: walk the wire format without a schema.

Field names are unknown, so strings are judged with the free-text rules (plus a bare
international number filling a whole string); numbers in varints are not read (ids, times,
amounts). A length-delimited field is a string when its bytes are text, else a nested message
when they parse as one, else bytes. A body declared as protobuf that does not parse is
`undecodable`. gRPC frames (5-byte prefix, compressed flag) and gRPC-web text (base64) are undone.
"""

from __future__ import annotations

import orjson

from proxy.inspect.decode import DecodeError, decompress
from proxy.inspect.encoded import base64_bytes, is_text
from proxy.inspect.free_text import scan_bare_numbers, scan_string
from proxy.inspect.model import UNDECODABLE, UNSUPPORTED_ENCODING
from proxy.inspect.scan import Scan

PROTOBUF_MEDIA = frozenset(
    {
        "application/x-protobuf",
        "application/protobuf",
        "application/x-google-protobuf",
        "application/vnd.google.protobuf",
        "application/proto",
    }
)
_GRPC_PREFIX = "application/grpc"
_MAX_FIELDS_PER_MESSAGE = 100_000

# One parsed field: (field number, wire type, bytes of a length-delimited value or None).
_Field = tuple[int, int, bytes | None]


def is_protobuf_media(media: str) -> bool:
    """`application/x-protobuf`, `application/grpc`, `application/grpc-web+proto`, ..."""
    return media in PROTOBUF_MEDIA or media.startswith(_GRPC_PREFIX)


def scan_protobuf(scan: Scan, body: bytes, media: str, grpc_encoding: str, ctx: int) -> None:
    """Scan a protobuf or gRPC body; findings are located as `protobuf:<field>.<field>…`."""
    if media.startswith("application/grpc-web-text"):
        decoded = base64_bytes(body.strip())
        if decoded is None:
            scan.problem(UNDECODABLE)
            return
        body = decoded
    if media.startswith(_GRPC_PREFIX):
        messages = _grpc_messages(scan, body, grpc_encoding)
        if messages is None:
            return
    else:
        messages = [body]
    for message in messages:
        fields = _parse(message)
        if fields is None:
            scan.problem(UNDECODABLE)
            continue
        _scan_fields(scan, fields, "protobuf:", 0)


def _grpc_messages(scan: Scan, body: bytes, encoding: str) -> list[bytes] | None:
    """The messages of a gRPC (or gRPC-web) stream; None with a problem when it is malformed."""
    messages = []
    pos = 0
    while pos < len(body):
        if pos + 5 > len(body):
            scan.problem(UNDECODABLE)
            return None
        flag = body[pos]
        length = int.from_bytes(body[pos + 1 : pos + 5], "big")
        payload = body[pos + 5 : pos + 5 + length]
        if len(payload) != length:
            scan.problem(UNDECODABLE)
            return None
        pos += 5 + length
        if flag & 0x80:
            continue  # gRPC-web trailers: status and headers, not the message
        if flag & 0x01:
            coding = (encoding or "").strip().lower()
            if coding not in ("gzip", "deflate"):
                scan.problem(UNSUPPORTED_ENCODING)
                return None
            try:
                payload = decompress(
                    payload, coding, scan.limits.max_decompressed_bytes, truncated=False
                )
            except DecodeError as error:
                scan.problem(error.code)
                return None
        messages.append(payload)
    return messages


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _parse(data: bytes) -> list[_Field] | None:
    """The fields of one message, or None when `data` is not a well-formed message."""
    fields: list[_Field] = []
    pos, end = 0, len(data)
    try:
        while pos < end:
            key, pos = _varint(data, pos)
            number, wire = key >> 3, key & 7
            if number == 0 or len(fields) > _MAX_FIELDS_PER_MESSAGE:
                return None
            if wire == 0:
                _, pos = _varint(data, pos)
                fields.append((number, wire, None))
            elif wire == 1:
                pos += 8
                fields.append((number, wire, None))
            elif wire == 5:
                pos += 4
                fields.append((number, wire, None))
            elif wire == 2:
                length, pos = _varint(data, pos)
                if pos + length > end:
                    return None
                fields.append((number, wire, data[pos : pos + length]))
                pos += length
            elif wire in (3, 4):
                fields.append((number, wire, None))  # (deprecated) group markers
            else:
                return None
    except ValueError:
        return None
    return fields if pos == end else None


def _scan_fields(scan: Scan, fields: list[_Field], path: str, depth: int) -> None:
    if scan.too_deep(depth):
        return
    for number, _, value in fields:
        scan.count_field()
        if not value:
            continue
        location = f"{path}{number}" if path.endswith(":") else f"{path}.{number}"
        text = is_text(value)
        if text is not None:
            _scan_string_field(scan, location, text)
            continue
        nested = _parse(value)
        if nested:
            _scan_fields(scan, nested, location, depth + 1)


def _scan_string_field(scan: Scan, location: str, text: str) -> None:
    if text[:1] in "{[" and text.rstrip()[-1:] in "}]":
        try:
            document = orjson.loads(text)
        except orjson.JSONDecodeError:
            pass
        else:
            from proxy.inspect.walk import walk  # walk → fields → … → this module

            walk(scan, document, location, None, 0, 1)
            return
    scan_string(scan, location, text, is_text=True)
    scan_bare_numbers(scan, location, text)
