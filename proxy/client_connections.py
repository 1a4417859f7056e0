"""What the proxy's two HTTP/1.1 clients share: a kept-alive connection and the TLS trust.

`proxy.upstream` (calls to vendors) and `proxy.control_client` (the registry, OPA, worker admin
ports) each pool their own connections; both send requests, read responses, decide reuse and
verify servers the same way, here.

A `KeptAliveConnection` is an `asyncio.Protocol`, not a pair of streams: its `data_received`
feeds an httptools (llhttp) response parser, the one parser of response heads and body
framings (chunked, Content-Length, the end of the connection). A small answer that arrives
whole with its head wakes its reader once (one future per response), with the body already
collected; a big, chunked or close-delimited body is read chunk by chunk, and the socket stops
being read (`pause_reading`) while more than `_HIGH_WATER` bytes wait for the reader, so a slow
client holds back the upstream instead of filling memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from pathlib import Path

from httptools import HttpParserError, HttpParserUpgrade, HttpResponseParser

from proxy.deadlines import StreamDeadline

MAX_RESPONSE_HEAD = 64 * 1024
# Body bytes received but not yet taken by the reader above which the socket is not read.
_HIGH_WATER = 256 * 1024
_NO_BODY_STATUSES = (204, 304)
# The versions a status line may begin with, as its first 9 bytes.
_VERSIONS = {b"HTTP/1.1 ": "1.1", b"HTTP/1.0 ": "1.0"}


def client_ssl_context(ca_file: Path | str | None) -> ssl.SSLContext:
    """Verify servers against the system's trust store, or only `ca_file` when given."""
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    context.set_alpn_protocols(["http/1.1"])
    return context


class MalformedResponse(ValueError):
    """The server's answer is not HTTP/1.x, or breaks its framing."""


class KeptAliveConnection(asyncio.Protocol):
    """One HTTP/1.1 client connection, reusable while its framing is intact.

    Use: `begin(method)`, `write()` the request (`drain()` between big slices), `await
    head()`, then the body: whole with `take_body()` when `complete`, else `read_body()` until
    it answers b"". Failures surface as `OSError` (the connection broke), `TimeoutError` (the
    deadline passed), `asyncio.IncompleteReadError` (the server closed before the end) or
    `MalformedResponse`.
    """

    # Slotted (asyncio's protocols declare empty slots): no instance dict, whose keys CPython
    # 3.11 stops sharing past 29 attributes (a dict of 1.5 KB per connection, slower lookups).
    __slots__ = (
        "_body",
        "_broken",
        "_buffered",
        "_busy",
        "_drain_waiter",
        "_exc",
        "_head_request",
        "_interim",
        "_loop",
        "_parser",
        "_reading_paused",
        "_skip_body",
        "_version",
        "_waiter",
        "_write_paused",
        "chunked",
        "complete",
        "connection_values",
        "deadline",
        "head_done",
        "headers",
        "idle_since",
        "keep_alive",
        "length",
        "lost",
        "reason",
        "received",
        "status",
        "transport",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.transport: asyncio.Transport | None = None
        self._parser = HttpResponseParser(self)
        # One lazily re-armed timer per connection for every wait on the server (see
        # proxy.deadlines); at the deadline the transport is aborted, so a write in drain() fails.
        self.deadline: StreamDeadline | None = None
        self.idle_since = 0.0
        self.lost = False
        self._exc: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._busy = False
        self._head_request = False
        self._reading_paused = False
        self._interim = False  # (back to False when the interim answer ends)
        self._broken = False  # (a broken connection is never reused)
        self._skip_body = False  # (back to False once data_received replaced the parser)
        self._body: list[bytes] = []  # (empty again once taken: a reused connection's is)
        self._buffered = 0
        self.status = 0
        self.keep_alive = False
        self._reset()

    def _reset(self) -> None:
        """Forget the last answer (what `on_headers_complete` does not set anew)."""
        self.headers: list[tuple[bytes, bytes]] = []  # as received
        # The body's Content-Length; None when chunked or delimited by the end of the connection.
        self.length: int | None = None
        self.chunked = False
        self.head_done = False
        # The whole response is here (its body in `take_body()`): the framing ended.
        self.complete = False
        self.received = 0  # bytes of the answer received (0: the server said nothing yet)
        self.reason = b""  # (as it comes; an interim answer's is forgotten with it)
        # The answer's `Connection:` values, lower-cased, each after a comma (b"": none).
        self.connection_values = b""
        self._version: str | None = None  # the status line's, when read off the first segment

    # -- the request side ------------------------------------------------------------------

    def begin(self, method: str) -> None:
        """A new request goes out on this connection (its answer is read from here on)."""
        if self.received or self._busy:
            self._reset()
        self._busy = True
        self._head_request = method == "HEAD"

    def write(self, data: bytes | memoryview) -> None:
        """Queue request bytes; `ConnectionResetError` once the connection is closing (uvloop's
        transports would raise RuntimeError, asyncio's drop them silently)."""
        transport = self.transport
        assert transport is not None
        if transport.is_closing():
            raise ConnectionResetError("connection lost")
        transport.write(data)

    async def drain(self) -> None:
        """Wait while the kernel and transport buffers are full (big request bodies)."""
        if self._exc is not None:
            raise self._exc
        if self.lost:
            raise ConnectionResetError("connection lost")
        if self._write_paused:
            waiter = self._drain_waiter = self._loop.create_future()
            await waiter
            if self._exc is not None:
                raise self._exc

    # -- the response side -----------------------------------------------------------------

    def head_waiter(self) -> asyncio.Future[None] | None:
        """A future to await before the head is here (None: it is, or the connection failed)."""
        if self.head_done or self._exc is not None:
            return None
        waiter = self._waiter = self._loop.create_future()
        return waiter

    async def head(self) -> None:
        """Wait for the final response head (1xx interim answers are skipped)."""
        waiter = self.head_waiter()
        if waiter is not None:
            await waiter
        if not self.head_done:
            raise self._exc or ConnectionResetError("connection lost")

    @property
    def buffered(self) -> int:
        """Body bytes received and not yet taken."""
        return self._buffered

    def take_body(self) -> bytes:
        """The body bytes received and not yet taken (all of it once `complete`)."""
        body = self._body
        if not body:
            return b""
        data = body[0] if len(body) == 1 else b"".join(body)
        body.clear()
        self._buffered = 0
        if self._reading_paused and not self.lost:
            self._reading_paused = False
            assert self.transport is not None
            self.transport.resume_reading()
        return data

    async def read_body(self, read_timeout: float) -> bytes:
        """The next body bytes, b"" at the end; waits at most `read_timeout` s for the server."""
        while True:
            if self._body:
                return self.take_body()
            if self.complete:
                return b""
            if self._exc is not None:
                raise self._exc
            waiter = self._waiter = self._loop.create_future()
            deadline = self.deadline
            if deadline is not None:
                deadline.start(read_timeout)
            try:
                await waiter
            finally:
                if deadline is not None:
                    deadline.clear()

    @property
    def reusable(self) -> bool:
        """The answer ended where its framing said, and the server keeps the connection open."""
        return (
            self.complete
            and self.keep_alive
            and not self._broken
            and not self.lost
            and self._exc is None
            and not self._body
        )

    def done(self) -> None:
        """The request and its answer are over (pool or close the connection next)."""
        self._busy = False

    def is_usable(self, now: float, ttl: float) -> bool:
        """Open, not failed, not too old (an idle connection that got bytes or EOF is closed)."""
        return not self.lost and self._exc is None and now - self.idle_since < ttl

    def close(self) -> None:
        if self.deadline is not None:
            self.deadline.close()
        if self.transport is not None:
            with contextlib.suppress(Exception):
                self.transport.close()

    def abort(self) -> None:
        if self.deadline is not None:
            self.deadline.close()
        if self.transport is not None:
            self.transport.abort()

    def set_exception(self, exc: BaseException) -> None:
        """Fail the wait on the server (called by the deadline, then the transport is aborted)."""
        if self._exc is None:
            self._exc = exc
        self._wake()
        drain = self._drain_waiter
        if drain is not None:
            self._drain_waiter = None
            if not drain.done():
                drain.set_result(None)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's are not asyncio.Transport
        self.deadline = StreamDeadline(self, transport, loop=self._loop, abort=True)  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        if not self._busy:
            # Bytes nobody asked for: whatever follows cannot be trusted as the next answer.
            self._broken = True
            assert self.transport is not None
            self.transport.close()
            return
        received = self.received
        self.received = received + len(data)
        if not received:
            # The answer's status line starts its first segment: its version is read here, not
            # formatted by httptools' get_http_version() (llhttp checks the line all the same).
            self._version = _VERSIONS.get(data[:9])
        try:
            self._parser.feed_data(data)
        except HttpParserUpgrade:
            # 101 (or a 2xx to CONNECT): another protocol follows, which was never asked for.
            self._fail(MalformedResponse("switched protocols unasked"))
            return
        except HttpParserError as exc:
            cause = exc.__context__
            self._fail(
                cause if isinstance(cause, MalformedResponse) else MalformedResponse(str(exc))
            )
            return
        if not self.head_done and self.received > MAX_RESPONSE_HEAD:
            self._fail(MalformedResponse(f"response head over {MAX_RESPONSE_HEAD} bytes"))
            return
        if self._skip_body:
            # A HEAD answer ends with its head, whatever its framing fields say: llhttp cannot
            # be told so (httptools gives no way to skip the body), so the next answer starts
            # on a fresh parser.
            self._skip_body = False
            self._parser = HttpResponseParser(self)
        if self._buffered > _HIGH_WATER and not self._reading_paused:
            self._reading_paused = True
            assert self.transport is not None
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost settles what the end means

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.deadline is not None:
            self.deadline.close()
        if self._busy and not self.complete:
            if exc is None and self._exc is None and self.head_done and self._until_close:
                self.complete = True  # the end of the connection is the end of the body
            elif exc is not None:
                self.set_exception(exc)
            else:
                self.set_exception(asyncio.IncompleteReadError(b"", None))
        self.set_exception(ConnectionResetError("connection lost"))

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        drain = self._drain_waiter
        if drain is not None:
            self._drain_waiter = None
            if not drain.done():
                drain.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        self._broken = True
        self.set_exception(exc)
        assert self.transport is not None
        self.transport.abort()

    @property
    def _until_close(self) -> bool:
        return self.length is None and not self.chunked

    # -- httptools callbacks -----------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.complete:
            self._broken = True  # a second answer to one request
            raise MalformedResponse("more than one response")

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.head_done:
            return  # trailers: hop-by-hop, dropped
        if len(name) in (10, 14, 17):  # only these lengths can be the framing fields read here
            self._framing_field(name, value)
        self.headers.append((name, value))

    def _framing_field(self, name: bytes, value: bytes) -> None:
        """Read a head field that may frame the answer (`Content-Length`, `Transfer-Encoding`)
        or say whether the connection stays open (`Connection`)."""
        lname = name.lower()
        if lname == b"content-length":
            self.length = int(value)  # llhttp has checked the digits and duplicates
        elif lname == b"transfer-encoding":
            # Only plain chunked is relayed: the app would get other codings' bytes
            # without the header that names them (Transfer-Encoding is hop-by-hop).
            if value.strip().lower() != b"chunked":
                raise MalformedResponse("unsupported transfer coding")
            self.chunked = True
        elif lname == b"connection":
            self.connection_values += b"," + value.lower()

    def on_headers_complete(self) -> None:
        parser = self._parser
        status = parser.get_status_code()
        if status == 101:
            # Never asked for (no Upgrade is ever sent): relayed, it would leave the app
            # waiting on a connection that switched to nothing (RFC 9110 §15.2.2).
            raise MalformedResponse("101 Switching Protocols without an Upgrade request")
        if status < 200:
            # An interim answer (103 Early Hints; we never send Expect): the final one follows.
            # Not relayed: http.client (requests, urllib3) reads any 1xx but 100 as the final
            # answer, and what a 103 hints at is for browsers.
            self._interim = True
            received = self.received
            self._reset()  # (the final answer's version is asked of the parser)
            self.received = received
            return
        self.status = status
        if self.chunked:
            self.length = None  # (llhttp refuses Content-Length beside it anyway)
        # The `Connection:` tokens, usually none. `find`, not `in`: CPython 3.11's `bytes in
        # bytes` first tries the operand as an integer and formats the TypeError it gets (~2k
        # instructions).
        connection = self.connection_values
        if (self._version or parser.get_http_version()) == "1.1":
            keep_alive = not connection or connection.find(b"close") < 0
        else:
            keep_alive = connection.find(b"keep-alive") >= 0
        no_body = self._head_request or status in _NO_BODY_STATUSES
        # (`_until_close` inline: a property call per answer)
        until_close = self.length is None and not self.chunked
        self.keep_alive = keep_alive and (no_body or not until_close)
        self.head_done = True
        if no_body:
            self.complete = True
            self._skip_body = self._head_request
        waiter = self._waiter  # (`_wake()` inline: once per answer)
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def on_body(self, body: bytes) -> None:
        if self.complete:
            self._broken = True  # a body after a HEAD answer's head: not an answer we sent for
            return
        self._body.append(body)
        self._buffered += len(body)
        if self._waiter is not None:
            self._wake()

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        self.complete = True
        if self._waiter is not None:
            self._wake()
