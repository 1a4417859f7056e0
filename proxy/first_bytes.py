"""Name the destination of a redirected connection from its first bytes, without consuming them.

A transparently captured connection carries no CONNECT line: the only names on it are the SNI
of a TLS ClientHello and the Host of an HTTP/1.x request. The bytes are *peeked*
(`MSG_PEEK`), never read, so that afterwards the connection is handed on untouched: the HTTP
server side parses the request as usual, a spliced tunnel replays the ClientHello byte for byte,
and TLS interception performs the handshake on the very ClientHello the app sent.

Anything else (SSH, a server-speaks-first protocol such as SMTP where the client sends nothing,
TLS without SNI, a CONNECT, garbage) has no name: `Identity.protocol == "unknown"`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from dataclasses import dataclass
from typing import Literal

import httptools

from proxy.client_hello import NotClientHello, looks_like_tls, parse_client_hello
from sharewall.hosts import BadAuthority, parse_authority, parse_url

Protocol = Literal["tls", "http", "unknown"]


@dataclass(frozen=True, slots=True)
class Identity:
    """What the first bytes say: the protocol, the host name and the port the name carries."""

    protocol: Protocol
    name: str | None = None
    port: int | None = None  # only an HTTP Host (or absolute-form target) with an explicit port
    why: str | None = None  # for the log when unknown: "no_sni", "not_http", "timeout", ...

    @property
    def is_named(self) -> bool:
        return self.name is not None


def identify(data: bytes, *, eof: bool = False, limit: int = 32 * 1024) -> Identity | None:
    """The identity of a connection whose first bytes are `data`; None when more are needed.

    `eof`: no more bytes will come (the client closed or stopped sending in time).
    """
    if not data:
        return None if not eof else Identity("unknown", why="no_bytes")
    if looks_like_tls(data):
        try:
            hello = parse_client_hello(data, limit=limit)
        except NotClientHello:
            return Identity("unknown", why="malformed_tls")
        if hello is None:
            return _incomplete(data, eof, limit, "truncated_tls")
        if hello.server_name is None:
            return Identity("tls", why="no_sni")
        return Identity("tls", name=hello.server_name)
    try:
        head = _parse_http_head(data)
    except _NotHttp as exc:
        return Identity("unknown", why=str(exc))
    if head is None:
        return _incomplete(data, eof, limit, "truncated_http")
    return head


def _incomplete(data: bytes, eof: bool, limit: int, why: str) -> Identity | None:
    if eof or len(data) >= limit:
        return Identity("unknown", why=why)
    return None


class _NotHttp(ValueError):
    pass


class _HeadDone(Exception):
    pass


class _HeadReader:
    """httptools callbacks keeping the request target and the first Host header."""

    def __init__(self) -> None:
        self.url = bytearray()
        self.host: str | None = None
        self._name = b""
        self.complete = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.host is None and name.lower() == b"host":
            self.host = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.complete = True
        raise _HeadDone


def _parse_http_head(data: bytes) -> Identity | None:
    reader = _HeadReader()
    parser = httptools.HttpRequestParser(reader)
    try:
        parser.feed_data(data)
    except httptools.HttpParserCallbackError as exc:
        if not isinstance(exc.__context__, _HeadDone) and not reader.complete:
            raise _NotHttp("not_http") from None
    except httptools.HttpParserUpgrade:
        if not reader.complete:
            raise _NotHttp("not_http") from None
    except httptools.HttpParserError:
        raise _NotHttp("not_http") from None
    if not reader.complete:
        return None
    method = parser.get_method()
    if method == b"CONNECT":
        return Identity("unknown", why="connect")
    target = reader.url.decode("latin-1")
    try:
        if "://" in target:
            parsed = parse_url(target)
            host, port = parsed.host, parsed.port
            explicit = _explicit_port(target.partition("://")[2])
            return Identity("http", name=host, port=port if explicit else None)
        if reader.host is None:
            return Identity("http", why="no_host")
        host, port = parse_authority(reader.host, default_port=0)
    except BadAuthority:
        return Identity("http", why="bad_host")
    return Identity("http", name=host, port=port or None)


def _explicit_port(rest: str) -> bool:
    authority = rest.split("/", 1)[0].split("?", 1)[0]
    return ":" in authority.rpartition("]")[2]


async def peek_identity(sock: socket.socket, *, seconds: float, limit: int) -> Identity:
    """Peek at the first bytes of accepted, non-blocking TCP socket `sock` until they name it.

    Waits at most `seconds` in all (a client that sends nothing is "unknown",
    why "timeout") and looks at no more than `limit` bytes. Nothing is consumed: the socket's
    receive queue is exactly as the client sent it when this returns.
    """
    loop = asyncio.get_running_loop()
    seen = 0
    try:
        async with asyncio.timeout(seconds):
            while True:
                # Wake only when more than the bytes already seen are queued (or on EOF):
                # a peek does not drain the queue, so plain readability would fire forever.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, seen + 1)
                await _readable(loop, sock)
                try:
                    data = sock.recv(limit, socket.MSG_PEEK)
                except BlockingIOError:
                    continue
                eof = len(data) <= seen  # readable without new bytes: the client shut down
                seen = len(data)
                identity = identify(data, eof=eof, limit=limit)
                if identity is not None:
                    return identity
    except TimeoutError:
        return Identity("unknown", why="timeout")
    finally:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 1)


async def peek_waiting(fd: int, n: int) -> bytes:
    """Up to `n` bytes waiting in the socket `fd` once there are some, not read; b"" at its end.

    For a socket a transport owns (its reading paused, so the bytes stay queued): the wait is
    on a duplicate of the descriptor, as a loop refuses to watch one of its transports' own.
    """
    loop = asyncio.get_running_loop()
    with socket.socket(fileno=os.dup(fd)) as dup:
        dup.setblocking(False)
        while True:
            try:
                return dup.recv(n, socket.MSG_PEEK)
            except BlockingIOError:
                await _readable(loop, dup)


async def _readable(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
    future: asyncio.Future[None] = loop.create_future()
    fd = sock.fileno()

    def ready() -> None:
        if not future.done():
            future.set_result(None)

    loop.add_reader(fd, ready)
    try:
        await future
    finally:
        loop.remove_reader(fd)
