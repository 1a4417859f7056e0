"""The HTTP/1 server side: one client connection as an asyncio protocol, requests read off it.

`ClientConnection` is the connection's `asyncio.Protocol`: `data_received` feeds httptools
(llhttp) directly, and the serving coroutine is woken only when something it waits for came
(a head, body bytes, the end), so a small request that arrives in one segment costs one
wake-up. A request head comes back as a `RequestHead`; its body is read up to the inspection
limit (`read_body`), the rest streamed on (`body_rest`) or drained (`discard_body`). A request
we cannot parse or accept is a `BadRequest` (status and code), which the listener answers and
then closes the connection.

Reading is bounded: while more than `READ_HIGH_WATER` body bytes (or `MAX_QUEUED_MESSAGES`
pipelined requests) wait unread and no one waits for more, the transport stops reading. Writing
goes straight to the transport through `conn.writer` (a `StreamWriter`-like facade whose
`drain()` honours the transport's `pause_writing`/`resume_writing`). After a CONNECT (or for a
captured connection that is not HTTP) the bytes are raw, read with `read()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl as ssl_module
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, NoReturn

import httptools

from proxy import responses
from proxy.deadlines import NEVER, StreamDeadline
from proxy.settings import Settings

# Unread body bytes (or raw bytes) above which the transport stops reading while no one waits.
READ_HIGH_WATER = 1 << 17
# Pipelined requests queued (heads are bounded by max_header_bytes each) before reading stops.
MAX_QUEUED_MESSAGES = 8


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


class RequestHead:
    """One request as the parser delivers it: its head (what the listener reads), then its body.

    A plain slotted class, the parser's record and the head handed out in one: one is made
    per request.
    """

    __slots__ = (
        "body",
        "complete",
        "counted",
        "first",
        "head_bytes",
        "head_done",
        "headers",
        "keep_alive",
        "left",
        "method",
        "size",
        "split",
        "target",
        "url",
        "version",
    )

    def __init__(self) -> None:
        self.url = bytearray()
        self.target = ""
        self.headers: list[tuple[str, str]] = []
        self.first: dict[str, str] = {}  # lower-case name -> first value (~6 are asked for)
        self.head_done = False
        self.complete = False
        self.body: list[bytes] = []  # few chunks: consumed as they come
        self.size = 0  # bytes queued in `body`
        self.method = ""
        self.version = "1.1"
        self.keep_alive = True
        self.split = False  # the head came in more than one segment
        self.counted = 0  # headers counted in `head_bytes`
        self.head_bytes = 0

    def header(self, name: str) -> str | None:
        """The first value of header `name` (case-insensitive)."""
        return self.first.get(name.lower())

    def head_size(self) -> int:
        """The head's size as counted against `max_header_bytes` (URL, names and values)."""
        headers = self.headers
        for name, value in headers[self.counted :]:
            self.head_bytes += len(name) + len(value) + 4
        self.counted = len(headers)
        return len(self.url) + self.head_bytes


class ClientWriter:
    """The writing side of a `ClientConnection`, shaped like `asyncio.StreamWriter`.

    `write` goes straight to the transport; `drain` waits only while the transport asked us
    to pause writing (its buffer is full), and fails once the connection is lost.
    """

    __slots__ = ("_conn", "transport")

    def __init__(self, conn: ClientConnection, transport: asyncio.Transport) -> None:
        self._conn = conn
        self.transport = transport

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Queue `data`; dropped once the connection is closing (`drain` says so).

        As asyncio's own transports do: uvloop's raise RuntimeError instead, which would turn
        an app gone mid-answer into a fault of ours.
        """
        transport = self.transport
        if not transport.is_closing():
            transport.write(data)

    def writelines(self, data: list[bytes]) -> None:
        transport = self.transport
        if not transport.is_closing():
            transport.writelines(data)

    async def drain(self) -> None:
        """Wait until the transport's buffer is below its high-water mark."""
        conn = self._conn
        if self.transport.is_closing() and not conn.lost:
            # Let connection_lost run, as StreamWriter does, so a write on a dying
            # connection fails here instead of vanishing.
            await asyncio.sleep(0)
        if conn.lost:
            raise ConnectionResetError("Connection lost")
        if conn.write_paused:
            await conn.wait_writable()

    def is_closing(self) -> bool:
        return self.transport.is_closing()

    def close(self) -> None:
        self.transport.close()

    def can_write_eof(self) -> bool:
        return self.transport.can_write_eof()

    def write_eof(self) -> None:
        self.transport.write_eof()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.transport.get_extra_info(name, default)

    async def wait_closed(self) -> None:
        await asyncio.shield(self._conn.closed)

    async def start_tls(
        self, sslcontext: ssl_module.SSLContext, *, ssl_handshake_timeout: float | None = None
    ) -> None:
        """Upgrade the connection to TLS as its server (an intercepted CONNECT)."""
        conn = self._conn
        # No await before loop.start_tls pauses reading: a ClientHello must not reach the
        # HTTP parser.
        if conn.write_paused:
            await self.drain()
        transport = await conn.loop.start_tls(
            self.transport,
            conn,
            sslcontext,
            server_side=True,
            ssl_handshake_timeout=ssl_handshake_timeout,
        )
        if transport is None:  # the connection closed during the handshake
            raise ConnectionResetError("Connection lost during the TLS handshake")
        self.transport = conn.transport = transport  # type: ignore[assignment]
        conn.over_ssl = True


class ClientConnection(asyncio.Protocol):
    """One client connection: its protocol, its request reader and (`writer`) its writer.

    `on_connect` (servers made by `loop.create_server`) is called with the connection once the
    transport is up, to start serving it; `raw`: the bytes are not HTTP (a captured TLS
    connection), read with `read()`.
    """

    # Slotted (asyncio's protocols declare empty slots): no instance dict, whose keys CPython
    # 3.11 stops sharing past 29 attributes (slower lookups on every request, 1.5 KB more).
    __slots__ = (
        "_body_bytes",
        "_current",
        "_deadline",
        "_drain_waiters",
        "_error",
        "_fields_to",
        "_max_header_bytes",
        "_messages",
        "_on_connect",
        "_parser",
        "_raw",
        "_raw_size",
        "_reading_paused",
        "_segment",
        "_waiter",
        "closed",
        "eof",
        "http_in_tunnel",
        "loop",
        "lost",
        "over_ssl",
        "served",
        "settings",
        "source",
        "transport",
        "tunnel_established",
        "upgrade_rest",
        "write_paused",
        "writer",
    )

    def __init__(
        self,
        settings: Settings,
        source: Source | None = None,
        *,
        on_connect: Callable[[ClientConnection], None] | None = None,
        raw: bool = False,
    ) -> None:
        self.settings = settings
        # Who calls on this connection: a gateway client's certificate, else the sidecar's settings.
        self.source = source or Source(settings.source_workload, settings.source_namespace)
        self.loop = asyncio.get_running_loop()
        self._on_connect = on_connect
        self.transport: asyncio.Transport | None = None
        self.writer: ClientWriter = None  # type: ignore[assignment]  # set in connection_made
        self._parser = httptools.HttpRequestParser(self)
        self._messages: deque[RequestHead] = deque()
        self._current: RequestHead | None = None
        self._fields_to: RequestHead | _Trailers = _TRAILERS  # where on_header puts a field
        self._max_header_bytes = settings.max_header_bytes
        self._segment = 0  # bytes of the segment being parsed
        self.upgrade_rest: bytes | None = None  # bytes after a CONNECT head
        self._raw: deque[bytes] | None = deque() if raw else None  # bytes after an upgrade
        self._raw_size = 0
        self._body_bytes = 0  # body bytes queued, all messages
        self._waiter: asyncio.Future[None] | None = None
        self._error: BaseException | None = None  # what every later read raises
        self._reading_paused = False
        self.write_paused = False
        self._drain_waiters: deque[asyncio.Future[None]] = deque()
        self.lost = False
        self.closed: asyncio.Future[None] = self.loop.create_future()
        self.over_ssl = False
        self.tunnel_established = False  # "200 Connection Established" was sent
        # Requests are read inside a CONNECT we answered (over our TLS, or plain HTTP).
        self.http_in_tunnel = False
        self.served = 0  # requests answered on this stream (TLS upgrade included)
        self.eof = False
        # Head, body and idle timeouts of this connection's reads (one lazily re-armed timer).
        self._deadline = StreamDeadline(self, loop=self.loop)

    # -- asyncio.Protocol -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.writer = ClientWriter(self, transport)  # type: ignore[arg-type]
        self.over_ssl = transport.get_extra_info("sslcontext") is not None
        if self._on_connect is not None:
            self._on_connect(self)

    def data_received(self, data: bytes) -> None:
        if self._error is not None:
            return
        raw = self._raw
        if raw is not None:
            m = self._current
            if m is not None and not m.complete:  # the body of a request with an Upgrade
                self._upgrade_body(m, data)
                return
            raw.append(data)
            self._raw_size += len(data)
            if self._raw_size > READ_HIGH_WATER and self._waiter is None:
                self._pause_reading()
            self._wake()
            return
        self._segment = len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            offset = exc.args[0] if exc.args else len(data)
            self._raw = deque()  # what follows is the tunnel's, not HTTP
            m = self._current
            if m is None or m.method == "CONNECT":
                self.upgrade_rest = bytes(data[offset:])
            else:
                self._upgraded_request(m, data[offset:])
                return
        except (_Refused, httptools.HttpParserError) as exc:
            # (A head refused in a callback left its BadRequest in `_error`.)
            self._fail(self._error or BadRequest(f"malformed request: {exc}"))
            return
        m = self._current
        if m is not None and not m.head_done:
            # A head split across segments: counted as it grows (a head that comes whole
            # is counted in on_headers_complete, only if its segment could hold too much).
            m.split = True
            if m.head_size() > self._max_header_bytes:
                self._fail(_too_large(m, self._max_header_bytes))
                return
        if self._waiter is not None:
            self._wake()
        elif self._body_bytes > READ_HIGH_WATER or len(self._messages) > MAX_QUEUED_MESSAGES:
            self._pause_reading()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        # Keep the transport open to answer a client that half-closed (not possible over TLS,
        # where asyncio warns and closes anyway).
        return not self.over_ssl

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.eof = True
        if exc is not None and self._error is None:
            self._error = exc
        self._wake()
        while self._drain_waiters:
            waiter = self._drain_waiters.popleft()
            if not waiter.done():
                waiter.set_exception(ConnectionResetError("Connection lost"))
        if not self.closed.done():
            self.closed.set_result(None)

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        while self._drain_waiters:
            waiter = self._drain_waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)

    async def wait_writable(self) -> None:
        """Wait until the transport resumes writing (or fail when the connection is lost)."""
        waiter = self.loop.create_future()
        self._drain_waiters.append(waiter)
        await waiter

    # -- httptools callbacks ------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._current = self._fields_to = RequestHead()
        self._messages.append(self._current)

    def on_url(self, url: bytes) -> None:
        self._current.url += url  # type: ignore[union-attr]

    def on_header(self, name: bytes, value: bytes) -> None:
        # Called per header of every request: kept to the least (the size is counted once; a
        # duplicate Host is looked for once per head). Trailer fields go to `_TRAILERS`.
        names = _NAME_TEXTS.get(name)
        if names is None:
            names = _name_texts(name)
        text_value = value.decode("latin-1")
        m = self._fields_to
        m.headers.append((names[0], text_value))
        m.first.setdefault(names[1], text_value)

    def on_headers_complete(self) -> None:
        m: RequestHead = self._current  # type: ignore[assignment]
        # A head no larger than its segment is within the limit when the segment is.
        if (m.split or self._segment > self._max_header_bytes) and (
            m.head_size() > self._max_header_bytes
        ):
            self._refuse(_too_large(m, self._max_header_bytes))
        parser = self._parser
        first = m.first
        keep_alive = parser.should_keep_alive()
        # llhttp keeps an HTTP/1.1 request alive unless a Connection (or Proxy-Connection)
        # field says close, and one of any other version it accepts (1.0, 0.9, 2.0) only when
        # such a field asks for it: alive without either field, it is HTTP/1.1, known without
        # get_http_version()'s string formatting (~3k instructions).
        if keep_alive and "connection" not in first and "proxy-connection" not in first:
            version = "1.1"
        else:
            version = parser.get_http_version()
            if version != "1.1" and version != "1.0":
                self._refuse(
                    BadRequest(
                        f"HTTP/{version} is not spoken here",
                        status=505,
                        code=responses.UNSUPPORTED,
                    )
                )
        if len(first) != len(m.headers) and _has_two_hosts(m):  # (a name came twice: rarely)
            # RFC 9112 §3.2: which Host names the call would be ambiguous.
            self._refuse(BadRequest("more than one Host header"))
        if "transfer-encoding" in first:
            refusal = _transfer_coding_refusal(m, version)
            if refusal is not None:
                self._refuse(refusal)
        # A chunked body's trailer fields are dropped (RFC 9110 §6.5.1): never merged into the
        # head, which is what is inspected and forwarded (the body goes on with a length).
        self._fields_to = _TRAILERS
        m.head_done = True
        m.target = m.url.decode("latin-1")
        raw_method = parser.get_method()
        m.method = _METHODS.get(raw_method) or raw_method.decode("ascii", "replace")
        m.version = version
        m.keep_alive = keep_alive

    def on_body(self, body: bytes) -> None:
        m: RequestHead = self._current  # type: ignore[assignment]
        m.body.append(body)
        m.size += len(body)
        self._body_bytes += len(body)

    def on_message_complete(self) -> None:
        self._current.complete = True  # type: ignore[union-attr]

    def _upgraded_request(self, m: RequestHead, rest: bytes | memoryview) -> None:
        """A request (not CONNECT) with `Connection: upgrade`: its body, and nothing after it.

        httptools reads no body after such a head (what follows is handed over as another
        protocol's), so a POST's bytes would be lost: its Content-Length body is read here
        (the listener serves the request as HTTP/1.1 when the upgrade is h2c, and refuses any
        other). A pipelined request after it is not read: the connection ends with the answer.
        """
        m.keep_alive = False
        if "transfer-encoding" in m.first:
            m.complete = False  # (reading its body fails with the refusal)
            self._fail(BadRequest("a chunked body with an Upgrade header"))
            return
        left = int(m.first.get("content-length") or 0)  # llhttp checked it is digits
        if left:
            m.complete = False
            m.left = left
            self._upgrade_body(m, rest)
        else:
            self._wake()  # (the head is here)

    def _upgrade_body(self, m: RequestHead, data: bytes | memoryview) -> None:
        left = m.left
        if len(data) >= left:
            data, m.complete = data[:left], True  # (anything after it is dropped)
        if data:
            self.on_body(bytes(data))
            m.left = left - len(data)
        if self._waiter is not None:
            self._wake()
        elif self._body_bytes > READ_HIGH_WATER:
            self._pause_reading()

    # -- waiting for bytes ----------------------------------------------------------------------

    def set_exception(self, exc: BaseException) -> None:
        """Every read fails with `exc` from now on (a read deadline passed)."""
        if self._error is None:
            self._error = exc
        self._wake()

    def _refuse(self, refusal: BadRequest) -> NoReturn:
        """Stop parsing inside a parser callback: the head is answered with `refusal`."""
        self._error = refusal  # (not read before data_received's `_fail` sets it again)
        raise _Refused  # httptools re-raises it wrapped, as a parser error

    def _fail(self, exc: BaseException) -> None:
        # What follows is dropped unparsed (data_received), but still read: closing on
        # unread bytes resets the connection before the client reads our 400.
        self._error = exc
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _pause_reading(self) -> None:
        if not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            with contextlib.suppress(RuntimeError, AttributeError):
                self.transport.pause_reading()

    async def _wait(self, deadline: float) -> None:
        """Wait until more bytes, the end or an error came, or the loop time `deadline` passed."""
        if self._reading_paused:
            self._reading_paused = False
            with contextlib.suppress(RuntimeError, AttributeError):
                self.transport.resume_reading()  # type: ignore[union-attr]
        waiter = self.loop.create_future()
        self._waiter = waiter
        deadline_ = self._deadline
        deadline_.set(deadline)
        try:
            await waiter
        finally:
            self._waiter = None
            deadline_.clear()

    def close(self) -> None:
        """The connection is done: drop its read timer."""
        self._deadline.close()

    # -- reading --------------------------------------------------------------------------------

    async def read_head(self, *, idle_timeout: float) -> RequestHead | None:
        """The next request head; None when the client closed (or idled out) between requests."""
        messages = self._messages
        deadline: float | None = None
        while not (messages and messages[0].head_done):
            error = self._error
            if error is not None:
                if deadline is None and isinstance(error, TimeoutError):
                    return None  # idled out between requests
                raise error
            if self._raw is not None:
                return None  # upgraded (or not HTTP): no more requests on this stream
            if self.eof:
                if messages:
                    raise BadRequest("connection closed inside a request head")
                return None
            if deadline is None and messages:
                # The head has begun: it gets the head timeout from now (slowloris).
                deadline = self.loop.time() + self.settings.header_timeout
            if deadline is None:
                await self._wait(self.loop.time() + idle_timeout)
            else:
                await self._wait(deadline)
        return messages[0]

    def _take_body(self, m: RequestHead) -> bytes:
        body = m.body[0] if len(m.body) == 1 else b"".join(m.body)
        m.body.clear()
        self._body_bytes -= m.size
        m.size = 0
        return body

    def _keep(self, m: RequestHead, rest: bytes) -> None:
        m.body.insert(0, rest)
        m.size += len(rest)
        self._body_bytes += len(rest)

    def _body_failure(self, message: str) -> BadRequest:
        error = self._error
        if isinstance(error, TimeoutError):
            return BadRequest(message, status=408, code=responses.REQUEST_TIMEOUT)
        if isinstance(error, BadRequest):
            return error
        if error is not None:
            raise error
        return BadRequest("connection closed inside a request body")

    async def read_body(self, limit: int) -> tuple[bytes, bool]:
        """Read the current request's body up to `limit` bytes: (prefix, is_truncated)."""
        read = self.body_here(limit)
        if read is not None:
            return read
        m = self._messages[0]
        # One deadline for the whole inspected part: a trickling client cannot hold a call
        # open for long by sending a byte now and then.
        deadline = self.loop.time() + self.settings.body_timeout
        while not m.complete and m.size <= limit:
            if self._error is not None or self.eof:
                raise self._body_failure("request body not received in time")
            await self._wait(deadline)
        return self.body_here(limit)  # type: ignore[return-value]  # (here now)

    def body_here(self, limit: int) -> tuple[bytes, bool] | None:
        """`read_body(limit)` when the body is here already (whole, or past `limit`); else None.

        The usual small API call comes whole with its head: read without a coroutine, a
        deadline or a join.
        """
        m = self._messages[0]
        if not m.complete and m.size <= limit:
            return None
        body = self._take_body(m) if m.size else b""
        if len(body) > limit:
            # Keep what is past the limit for forwarding; inspect only the prefix.
            self._keep(m, body[limit:])
            return body[:limit], True
        return body, False

    @property
    def body_complete(self) -> bool:
        m = self._messages[0]
        return m.complete and not m.body

    async def body_rest(self) -> AsyncIterator[bytes]:
        """The rest of the current request's body (after `read_body`), as it arrives."""
        m = self._messages[0]
        while True:
            while m.body:
                chunk = m.body.pop(0)
                m.size -= len(chunk)
                self._body_bytes -= len(chunk)
                yield chunk
            if m.complete:
                return
            if self._error is not None or self.eof:
                raise self._body_failure("request body stalled")
            await self._wait(self.loop.time() + self.settings.body_timeout)

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
        m = self._messages.popleft()
        self._body_bytes -= m.size

    def hold_reading(self) -> None:
        """Stop reading the socket (after a CONNECT, before its answer): what the client sends
        next stays queued there, to be peeked at, then read by TLS (`writer.start_tls`) or,
        with `read_http_again`, by a fresh parser."""
        self.transport.pause_reading()  # type: ignore[union-attr]

    def read_http_again(self) -> None:
        """Read requests again from the socket held by `hold_reading` (plain HTTP inside a
        CONNECT), with a fresh parser."""
        self.reset_parser()
        self.transport.resume_reading()  # type: ignore[union-attr]

    def reset_parser(self) -> None:
        """A fresh parser for the same connection (after a TLS upgrade inside CONNECT)."""
        self._parser = httptools.HttpRequestParser(self)
        self._messages.clear()
        self._current = None
        self.upgrade_rest = None
        self._raw = None
        self._raw_size = 0
        self._body_bytes = 0
        self._reading_paused = False
        self.eof = False

    async def read(self, n: int = -1) -> bytes:
        """The next raw bytes (after a CONNECT, or not HTTP); b"" at the end.

        Like `StreamReader.read`, for `proxy.tunnel.splice`: a chunk as it arrived (`n` is a
        hint; a chunk is at most what the transport reads at once).
        """
        raw = self._raw
        assert raw is not None, "read() is for raw bytes (after an upgrade)"
        while not raw:
            if self._error is not None:
                raise self._error
            if self.eof:
                return b""
            await self._wait(NEVER)
        data = raw.popleft()
        self._raw_size -= len(data)
        return data

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()


# The methods' names as str without a decode per request.
_METHODS = {
    name.encode(): name
    for name in ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "CONNECT")
}


# A field name as text and lower-cased, by its bytes: an app sends the same few names on every
# call, and one dict read costs less than a decode and a lower() (~0.7k instructions a field).
# Bounded in entries and length: names past the bounds are decoded each time.
_NAME_TEXTS: dict[bytes, tuple[str, str]] = {}
_NAME_TEXTS_MAX = 512
_NAME_TEXT_MAX_LENGTH = 64


def _name_texts(name: bytes) -> tuple[str, str]:
    """(`name` as text, lower-cased), remembered in `_NAME_TEXTS` while it has room."""
    text = name.decode("latin-1")
    texts = (text, text.lower())
    if len(_NAME_TEXTS) < _NAME_TEXTS_MAX and len(name) <= _NAME_TEXT_MAX_LENGTH:
        _NAME_TEXTS[name] = texts
    return texts


class _Refused(Exception):
    pass


class _Dropped(list):  # type: ignore[type-arg]
    def append(self, item: object) -> None:
        pass


class _DroppedFirst(dict):  # type: ignore[type-arg]
    def setdefault(self, key: object, default: object = None) -> object:
        return default


class _Trailers:
    """Where `on_header` puts the fields after a head: nowhere."""

    __slots__ = ("first", "headers")

    def __init__(self) -> None:
        self.headers = _Dropped()
        self.first = _DroppedFirst()


_TRAILERS = _Trailers()


def _too_large(m: RequestHead, limit: int) -> BadRequest:
    """431, or 414 when the request target alone is over the head limit."""
    if len(m.url) > limit:
        return BadRequest("request target too long", status=414, code=responses.URI_TOO_LONG)
    return BadRequest("request head too large", status=431, code=responses.HEADERS_TOO_LARGE)


def _has_two_hosts(m: RequestHead) -> bool:
    return sum(1 for name, _ in m.headers if name.lower() == "host") > 1


def _transfer_coding_refusal(m: RequestHead, version: str) -> BadRequest | None:
    """Why a body framed other than by plain `chunked` is refused (llhttp checked that chunked
    comes last), or None.

    Another coding (gzip, deflate, identity) would be dropped with the hop-by-hop field and
    its bytes sent on as if they were the content (RFC 9112 §6.1: 501); an HTTP/1.0 message
    with Transfer-Encoding has a faulty framing (RFC 9112 §6.1).
    """
    if version == "1.0":
        return BadRequest("Transfer-Encoding in an HTTP/1.0 request")
    codings = [
        coding.strip().lower()
        for name, value in m.headers
        if name.lower() == "transfer-encoding"
        for coding in value.split(",")
        if coding.strip()
    ]
    if codings != ["chunked"]:
        return BadRequest(
            "transfer codings other than chunked are not supported",
            status=501,
            code=responses.UNSUPPORTED,
        )
    return None
