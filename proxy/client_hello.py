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
    reader = _Reader(body)
    reader.take(2 + 32)  # legacy_version, random
    reader.vector(1)  # legacy_session_id
    reader.vector(2)  # cipher_suites
    reader.vector(1)  # legacy_compression_methods
    if reader.done:
        return None  # no extensions at all (an SSL 3.0-era hello): no name
    extensions = _Reader(reader.vector(2))
    name: str | None = None
    seen: set[int] = set()
    while not extensions.done:
        kind = extensions.u16()
        data = extensions.vector(2)
        if kind in seen:
            raise NotClientHello("duplicate extension")  # RFC 8446 §4.2
        seen.add(kind)
        if kind == _SERVER_NAME:
            name = _host_name(data)
    if not reader.done:
        raise NotClientHello("bytes after the extensions")
    return name


def _host_name(data: bytes) -> str | None:
    names = _Reader(_Reader(data).vector(2))
    host: str | None = None
    while not names.done:
        name_type = names.take(1)[0]
        value = names.vector(2)
        if name_type != _HOST_NAME:
            continue
        if host is not None:
            raise NotClientHello("more than one host_name")  # RFC 6066 §3
        try:
            text = value.decode("ascii")
            host = normalise_host(text)
        except (UnicodeDecodeError, ValueError):
            raise NotClientHello("server_name is not a host name") from None
        if ":" in host or host.replace(".", "").isdigit():
            raise NotClientHello("server_name is an IP literal")  # RFC 6066 §3 forbids it
    return host


def _u16(data: bytes, offset: int) -> int:
    return (data[offset] << 8) | data[offset + 1]


class _Reader:
    """Bounds-checked reads over one structure; any overrun is a malformed ClientHello."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    @property
    def done(self) -> bool:
        return self.pos >= len(self.data)

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise NotClientHello("truncated ClientHello field")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def vector(self, length_bytes: int) -> bytes:
        return self.take(int.from_bytes(self.take(length_bytes), "big"))
