"""A TLS ClientHello, read from a connection's first bytes: is it one, and which name (SNI)?

The ClientHello may be fragmented across TLS records (RFC 8446 §5.1 allows a handshake message
to span records) and across TCP reads; `parse_client_hello` is called again with more bytes
until it has the whole message. Only the fields needed to reach the extensions are walked; the
server_name extension (RFC 6066 §3) gives the name. Nothing is decrypted or changed: the proxy
replays these very bytes upstream when it splices.
"""

from __future__ import annotations

from dataclasses import dataclass

from sharewall.hosts import normalise_host

_HANDSHAKE = 0x16
_CLIENT_HELLO = 0x01
_SERVER_NAME = 0x0000
_HOST_NAME = 0x00
_MAX_RECORD = 1 << 14  # RFC 8446 §5.1: a plaintext record never carries more
# Far above any real ClientHello (post-quantum key shares and ECH stay under 4 KiB) and low
# enough that an app cannot make the proxy hold much per connection.
MAX_CLIENT_HELLO = 32 * 1024


class NotClientHello(ValueError):
    """The bytes are not (or stop being) a well-formed TLS ClientHello."""


@dataclass(frozen=True, slots=True)
class ClientHello:
    """What the proxy needs of a ClientHello: the SNI host name (normalised), if any."""

    server_name: str | None
    size: int  # bytes of TLS records it took, headers included


def looks_like_tls(data: bytes) -> bool:
    """True when `data` starts like a TLS handshake record (content type 22, version 3.x)."""
    return len(data) >= 1 and data[0] == _HANDSHAKE and (len(data) < 2 or data[1] == 3)


def parse_client_hello(data: bytes, *, limit: int = MAX_CLIENT_HELLO) -> ClientHello | None:
    """The ClientHello at the start of `data`, None when more bytes are needed.

    Raises `NotClientHello` for anything else: another record type, an oversized or empty
    record, a handshake message that is not a ClientHello, malformed fields, a message longer
    than `limit`, or a server_name that is not a valid host name.
    """
    message = bytearray()
    offset = 0
    needed: int | None = None
    while needed is None or len(message) < needed:
        if len(data) < offset + 5:
            return None
        content_type, major, length = data[offset], data[offset + 1], _u16(data, offset + 3)
        if content_type != _HANDSHAKE or major != 3:
            raise NotClientHello("not a TLS handshake record")
        if length == 0 or length > _MAX_RECORD:
            raise NotClientHello("TLS record length out of range")
        if len(data) < offset + 5 + length:
            return None
        message += data[offset + 5 : offset + 5 + length]
        offset += 5 + length
        if needed is None and len(message) >= 4:
            if message[0] != _CLIENT_HELLO:
                raise NotClientHello("first handshake message is not a ClientHello")
            needed = 4 + int.from_bytes(message[1:4], "big")
            if needed > limit:
                raise NotClientHello("ClientHello larger than the limit")
    assert needed is not None
    return ClientHello(server_name=_server_name(bytes(message[4:needed])), size=offset)


def _server_name(body: bytes) -> str | None:
    # Offsets, not a reader object: this runs once per captured TLS connection.
    pos = _skip(body, 2 + 32, 1)  # legacy_version, random; legacy_session_id
    pos = _skip(body, pos, 2)  # cipher_suites
    pos = _skip(body, pos, 1)  # legacy_compression_methods
    end = len(body)
    if pos == end:
        return None  # no extensions at all (an SSL 3.0-era hello): no name
    if _skip(body, pos, 2) != end:
        raise NotClientHello("bytes after the extensions")
    pos += 2
    name: str | None = None
    seen: set[int] = set()
    while pos < end:
        if pos + 4 > end:
            raise NotClientHello("truncated extension")
        kind = (body[pos] << 8) | body[pos + 1]
        length = (body[pos + 2] << 8) | body[pos + 3]
        pos += 4
        if pos + length > end:
            raise NotClientHello("truncated extension")
        if kind in seen:
            raise NotClientHello("duplicate extension")  # RFC 8446 §4.2
        seen.add(kind)
        if kind == _SERVER_NAME:
            name = _host_name(body[pos : pos + length])
        pos += length
    return name


def _skip(data: bytes, pos: int, length_bytes: int) -> int:
    """The offset after the vector at `pos` whose length takes `length_bytes` bytes."""
    start = pos + length_bytes
    if start > len(data):
        raise NotClientHello("truncated ClientHello field")
    end = start + int.from_bytes(data[pos:start], "big")
    if end > len(data):
        raise NotClientHello("truncated ClientHello field")
    return end


def _host_name(data: bytes) -> str | None:
    if _skip(data, 0, 2) != len(data):
        raise NotClientHello("malformed server_name extension")
    pos, end = 2, len(data)
    host: str | None = None
    while pos < end:
        name_type = data[pos]
        value_end = _skip(data, pos + 1, 2)
        value = data[pos + 3 : value_end]
        pos = value_end
        if name_type != _HOST_NAME:
            continue
        if host is not None:
            raise NotClientHello("more than one host_name")  # RFC 6066 §3
        try:
            host = normalise_host(value.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            raise NotClientHello("server_name is not a host name") from None
        if ":" in host or host.replace(".", "").isdigit():
            raise NotClientHello("server_name is an IP literal")  # RFC 6066 §3 forbids it
    return host


def _u16(data: bytes, offset: int) -> int:
    return (data[offset] << 8) | data[offset + 1]
