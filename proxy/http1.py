"""The HTTP/1 server side: reading client requests (head, then body) off one client stream.

httptools (llhttp) does the parsing. A request head comes back as a `RequestHead`; its body is
read up to the inspection limit (`read_body`), the rest streamed on (`body_rest`) or drained
(`discard_body`). A request we cannot parse or accept is a `BadRequest` (status and code), which
the listener answers and then closes the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httptools

from proxy import responses
from proxy.deadlines import StreamDeadline
from proxy.settings import Settings


@dataclass(frozen=True, slots=True)
class Source:
    """The calling workload (a sidecar's own settings, or a gateway client's certificate).

    Here, with the connection that carries it, rather than in `proxy.exchange`: the admin
    server reads requests with `ClientConnection` and needs nothing of the exchange (decision,
    inspector). `proxy.exchange` re-exports it.
    """

    workload: str | None = None
    namespace: str | None = None


class BadRequest(Exception):
    """A request we cannot parse or accept: answered 400 (or `status`) and the connection closed."""

    def __init__(self, message: str, *, status: int = 400, code: str = responses.BAD_REQUEST):
        super().__init__(message)
        self.status = status
        self.code = code


class _Message:
    """One request as the parser delivers it: head fields, then body chunks."""

    # A plain slotted class: one is made per request (a dataclass with default factories
    # costs twice as much to build).
    __slots__ = (
        "body",
        "complete",
        "first",
        "head_done",
        "head_size",
        "headers",
        "keep_alive",
        "method",
        "url",
        "version",
    )

    def __init__(self) -> None:
        self.url = bytearray()
        self.headers: list[tuple[str, str]] = []
        self.first: dict[str, str] = {}  # lower-case name -> first value
        self.head_done = False
        self.complete = False
        self.body: deque[bytes] = deque()
        self.method = ""
        self.version = "1.1"
        self.keep_alive = True
        self.head_size = 0


@dataclass(frozen=True, slots=True)
class RequestHead:
    """The parsed head of one request."""

    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    keep_alive: bool
    # Lower-case name -> first value, built while parsing: a request asks for ~6 headers.
    first: dict[str, str] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        """The first value of header `name` (case-insensitive)."""
        return self.first.get(name.lower())


class ClientConnection:
    """HTTP/1.x request reader over one client stream (httptools/llhttp does the parsing)."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        settings: Settings,
        source: Source | None = None,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.settings = settings
        # Who calls on this connection: a gateway client's certificate, else the sidecar's settings.
        self.source = source or Source(settings.source_workload, settings.source_namespace)
        self._parser = httptools.HttpRequestParser(self)
        self._messages: deque[_Message] = deque()
        self._current: _Message | None = None
        self.upgrade_rest: bytes | None = None  # bytes after a CONNECT head
        self._head_too_large = False
        self.tunnel_established = False  # "200 Connection Established" was sent
        self.tls = False  # the client stream was upgraded to TLS by us
        self.served = 0  # requests answered on this stream (TLS upgrade included)
        self.eof = False
        # Head, body and idle timeouts of this stream's reads (one lazily re-armed timer).
        self._deadline = StreamDeadline(reader, loop=reader._loop)  # type: ignore[attr-defined]

    # -- httptools callbacks ------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._current = _Message()
        self._messages.append(self._current)

    def on_url(self, url: bytes) -> None:
        assert self._current is not None
        self._current.url += url
        self._current.head_size += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        # Called per header of every request: the message in a local, no assert.
        m: _Message = self._current  # type: ignore[assignment]
        m.head_size += len(name) + len(value) + 4
        if m.head_size > self.settings.max_header_bytes:
            self._head_too_large = True
            raise _HeadTooLarge  # httptools re-raises it wrapped, as a parser error
        text_name, text_value = name.decode("latin-1"), value.decode("latin-1")
        m.headers.append((text_name, text_value))
        m.first.setdefault(text_name.lower(), text_value)

    def on_headers_complete(self) -> None:
        m = self._current
        assert m is not None
        m.head_done = True
        m.method = self._parser.get_method().decode("ascii", "replace")
        m.version = self._parser.get_http_version()
        m.keep_alive = self._parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        assert self._current is not None
        self._current.body.append(bytes(body))

    def on_message_complete(self) -> None:
        assert self._current is not None
        self._current.complete = True

    # -- reading --------------------------------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            offset = exc.args[0] if exc.args else len(data)
            self.upgrade_rest = bytes(data[offset:])
        except (_HeadTooLarge, httptools.HttpParserError) as exc:
            if self._head_too_large:
                raise BadRequest(
                    "request head too large", status=431, code=responses.HEADERS_TOO_LARGE
                ) from None
            raise BadRequest(f"malformed request: {exc}") from None

    async def _read(self, deadline: float) -> bytes:
        """The next bytes from the client; `TimeoutError` once the loop time `deadline` passed."""
        self._deadline.set(deadline)
        try:
            data = await self.reader.read(65536)
        finally:
            self._deadline.clear()
        if not data:
            self.eof = True
        return data

    def close(self) -> None:
        """The connection is done: drop its read timer."""
        self._deadline.close()

    async def read_head(self, *, idle_timeout: float) -> RequestHead | None:
        """The next request head; None when the client closed (or idled out) between requests."""
        clock = self._deadline
        deadline: float | None = None
        while not (self._messages and self._messages[0].head_done):
            if self.eof or self.upgrade_rest is not None:
                return None
            started = bool(self._messages) and (self._messages[0].url or self._messages[0].headers)
            if deadline is None and started:
                deadline = clock.time() + self.settings.header_timeout
            if deadline is None:
                try:
                    data = await self._read(clock.time() + idle_timeout)
                except TimeoutError:
                    return None
                deadline = clock.time() + self.settings.header_timeout
            else:
                if deadline - clock.time() <= 0:
                    raise TimeoutError
                data = await self._read(deadline)
            if not data:
                if self._messages:
                    raise BadRequest("connection closed inside a request head")
                return None
            self._feed(data)
            m = self._messages[0] if self._messages else None
            if m is not None and not m.head_done and m.head_size > self.settings.max_header_bytes:
                raise BadRequest(
                    "request head too large", status=431, code=responses.HEADERS_TOO_LARGE
                )
        m = self._messages[0]
        return RequestHead(
            method=m.method,
            target=m.url.decode("latin-1"),
            version=m.version,
            headers=m.headers,
            keep_alive=m.keep_alive,
            first=m.first,
        )

    async def read_body(self, limit: int) -> tuple[bytes, bool]:
        """Read the current request's body up to `limit` bytes: (prefix, is_truncated)."""
        m = self._messages[0]
        if m.complete and len(m.body) <= 1:
            # The whole body came with the head (the usual small API call): no deadline
            # to arm, no chunks to join.
            body = m.body.popleft() if m.body else b""
            if len(body) > limit:
                m.body.append(body[limit:])
                return body[:limit], True
            return body, False
        size = sum(len(c) for c in m.body)
        try:
            # One deadline for the whole inspected part: a trickling client cannot hold a
            # call open for long by sending a byte now and then.
            deadline = self._deadline.time() + self.settings.body_timeout
            while not m.complete and size <= limit:
                data = await self._read(deadline)
                if not data:
                    raise BadRequest("connection closed inside a request body")
                self._feed(data)
                size = sum(len(c) for c in m.body)
        except TimeoutError:
            raise BadRequest(
                "request body not received in time", status=408, code=responses.REQUEST_TIMEOUT
            ) from None
        body = b"".join(m.body)
        m.body.clear()
        if len(body) > limit:
            # Keep what is past the limit for forwarding; inspect only the prefix.
            m.body.append(body[limit:])
            return body[:limit], True
        return body, False

    @property
    def body_complete(self) -> bool:
        return self._messages[0].complete and not self._messages[0].body

    async def body_rest(self) -> AsyncIterator[bytes]:
        """The rest of the current request's body (after `read_body`), as it arrives."""
        m = self._messages[0]
        while True:
            while m.body:
                yield m.body.popleft()
            if m.complete:
                return
            try:
                data = await self._read(self._deadline.time() + self.settings.body_timeout)
            except TimeoutError:
                raise BadRequest(
                    "request body stalled", status=408, code=responses.REQUEST_TIMEOUT
                ) from None
            if not data:
                raise BadRequest("connection closed inside a request body")
            self._feed(data)

    async def discard_body(self, max_bytes: int, seconds: float) -> None:
        """Read and drop the rest of the current body, up to `max_bytes` or `seconds`."""
        dropped = 0
        with contextlib.suppress(TimeoutError, BadRequest, ConnectionError):
            async with asyncio.timeout(seconds):
                async for chunk in self.body_rest():
                    dropped += len(chunk)
                    if dropped > max_bytes:
                        return

    def finish_message(self) -> None:
        """Forget the current request (its body fully consumed)."""
        self._messages.popleft()

    def reset_parser(self) -> None:
        """A fresh parser for the same stream (after a TLS upgrade inside CONNECT)."""
        self._parser = httptools.HttpRequestParser(self)
        self._messages.clear()
        self._current = None
        self.upgrade_rest = None
        self.eof = False

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()


class _HeadTooLarge(Exception):
    pass
