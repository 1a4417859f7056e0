"""The upstream side: pooled HTTP/1.1 connections to checked addresses, streamed responses, tunnels.

A small purpose-built client rather than aiohttp's: it connects only to the address the
destination check approved (DNS is resolved once, by `proxy.destinations`; no rebinding).
`send_request()` answers an `UpstreamResponse` once the head arrived (httpcore's
`handle_async_request`); it never touches the client socket: `proxy.relay` writes the
response to the client, and the connection returns to the pool when the response is closed
with its body read whole. SNI and certificate verification use the host name.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import AnyStr

import structlog

from proxy import responses
from proxy.client_connections import KeptAliveConnection, client_ssl_context
from proxy.destinations import Destination
from sharewall.hosts import format_authority

log = structlog.get_logger("sharewall.proxy.upstream")

# RFC 9110 §7.6.1 hop-by-hop fields, plus what would reveal the pod or the proxy to a vendor,
# plus framing fields we recompute for the body we send.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "proxy-connection",
        "proxy-authorization",
        "proxy-authenticate",
        "keep-alive",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
_REQUEST_DROP = HOP_BY_HOP | {
    "http2-settings",  # of an h2c upgrade, which the proxy declines: hop-by-hop
    "host",
    "content-length",
    "expect",
    "via",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
}
SHAREWALL_PREFIX = "x-sharewall-"
_RESPONSE_DROP_BYTES = frozenset(name.encode() for name in HOP_BY_HOP | {"content-length"})
_PREFIX_BYTES = SHAREWALL_PREFIX.encode()


class UpstreamError(Exception):
    """The upstream could not be reached (502) or did not answer in time (504)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


# A field name's verdict: kept, dropped, or dropped and read (`Connection`, which names more
# hop-by-hop fields; `Content-Length`, which frames an answer).
_KEEP, _DROP, _CONNECTION, _LENGTH = 0, 1, 2, 3
_LENGTH_NAMES = frozenset({"content-length", b"content-length"})
# Verdicts cached per name as it came (its case included): a pure function of the name, and an
# app or vendor sends the same few names on every call. Bounded: past it, names are judged anew.
_VERDICTS_MAX = 512


def _judge(
    name: AnyStr, drop: frozenset[AnyStr], prefix: AnyStr, connection: AnyStr, cache: dict
) -> int:
    lname = name.lower()
    if lname == connection:
        verdict = _CONNECTION
    elif lname in drop or lname.startswith(prefix):
        verdict = _LENGTH if lname in _LENGTH_NAMES else _DROP
    else:
        verdict = _KEEP
    if len(cache) < _VERDICTS_MAX:
        cache[name] = verdict
    return verdict


_REQUEST_VERDICTS: dict[str, int] = {}
_RESPONSE_VERDICTS: dict[bytes, int] = {}
# `Connection:` tokens that name no field left to remove: the empty one, and the names dropped
# anyway (`keep-alive`, which many clients and servers send on every message).
_REQUEST_UNNAMED = _REQUEST_DROP | {""}
_RESPONSE_UNNAMED = _RESPONSE_DROP_BYTES | {b""}


def filter_request_headers(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Headers to send upstream: no hop-by-hop (nor what `Connection:` names), nothing
    revealing the pod, no `X-Sharewall-*`.

    One pass, each name's verdict looked up (a name's first time, judged); a second pass only
    when a `Connection:` header names fields still kept, which may come before it.
    """
    verdicts = _REQUEST_VERDICTS
    kept: list[tuple[str, str]] = []
    named: set[str] | None = None
    for header in headers:
        verdict = verdicts.get(header[0])
        if verdict is None:
            verdict = _judge(header[0], _REQUEST_DROP, SHAREWALL_PREFIX, "connection", verdicts)
        if verdict == _KEEP:
            kept.append(header)
        elif verdict == _CONNECTION:
            tokens = {t.strip().lower() for t in header[1].split(",")}
            named = tokens if named is None else named | tokens
    if named is not None:
        named -= _REQUEST_UNNAMED
        if named:
            return [(name, value) for name, value in kept if name.lower() not in named]
    return kept


def _without_named(headers: list[tuple[bytes, bytes]], values: bytes) -> list[tuple[bytes, bytes]]:
    """`headers` without the fields that `Connection:` `values` (lower-cased, each after a
    comma) name: hop-by-hop (RFC 9110 §7.6.1)."""
    named = {t.strip() for t in values.split(b",")} - _RESPONSE_UNNAMED
    if not named:
        return headers
    return [(name, value) for name, value in headers if name.lower() not in named]


class _Conn(KeptAliveConnection):
    """One upstream connection to a checked address, reusable while its framing is intact."""

    __slots__ = ("host_line", "key")

    def __init__(self, key: _Key, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self.key = key
        self.host_line = _host_line(key)  # (the same for every request it sends)

    def on_header(self, name: bytes, value: bytes) -> None:
        """Keep in `headers` only the fields the app gets (no hop-by-hop, no framing, no
        upstream `X-Sharewall-*`), judged as they come: the callback runs per field anyway,
        a second pass over them per answer would not."""
        if self.head_done:
            return  # trailers: hop-by-hop, dropped
        verdict = _RESPONSE_VERDICTS.get(name)
        if verdict is None:
            verdict = _judge(
                name, _RESPONSE_DROP_BYTES, _PREFIX_BYTES, b"connection", _RESPONSE_VERDICTS
            )
        if verdict == _KEEP:
            self.headers.append((name, value))
        elif verdict == _LENGTH:  # (nearly every answer's: without a call)
            self.length = int(value)  # llhttp has checked the digits and duplicates
        else:
            self._framing_field(name, value)


# (scheme, host name, checked address, port): a pooled connection only ever serves the
# destination that was checked, with the name its TLS session was verified for.
_Key = tuple[str, str, str, int]


class UpstreamPool:
    """Keep-alive pool of upstream HTTP/1.1 connections, each to a checked address.

    Connections go to `Destination.address` (never re-resolved: no DNS rebinding) while SNI
    and certificate verification use the host name.
    """

    def __init__(
        self,
        *,
        upstream_ca: Path | None = None,
        connect_timeout: float = 5.0,
        head_timeout: float = 60.0,
        read_timeout: float = 60.0,
        idle_ttl: float = 30.0,
        max_idle_per_key: int = 64,
    ) -> None:
        # `--upstream-ca` is read now (a bad file fails the start); the system's trust store
        # on the first TLS upstream, in a thread: ~1 MB and ~20 ms a sidecar whose HTTPS calls
        # are all CONNECT tunnels never spends.
        self._ssl_context = client_ssl_context(upstream_ca) if upstream_ca else None
        self._ssl_loading: asyncio.Future[ssl.SSLContext] | None = None
        self.connect_timeout = connect_timeout
        self.head_timeout = head_timeout
        self.read_timeout = read_timeout
        self.idle_ttl = idle_ttl
        self.max_idle_per_key = max_idle_per_key
        self._idle: dict[_Key, list[_Conn]] = {}
        self._closed = False
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the sweeper that closes idle connections the upstream dropped or that aged."""
        self._closed = False
        self._sweeper = asyncio.create_task(self._sweep(), name="upstream-pool-sweeper")

    async def _sweep(self) -> None:
        # Without it a connection the upstream closed sits in CLOSE_WAIT until its key is
        # used again, which for a rarely called vendor may be never.
        while True:
            await asyncio.sleep(max(1.0, self.idle_ttl / 3))
            now = time.monotonic()
            for key in list(self._idle):
                keep = []
                for conn in self._idle[key]:
                    if conn.is_usable(now, self.idle_ttl):
                        keep.append(conn)
                    else:
                        conn.close()
                if keep:
                    self._idle[key] = keep
                else:
                    del self._idle[key]

    @property
    def idle_connections(self) -> int:
        return sum(len(c) for c in self._idle.values())

    async def close(self) -> None:
        """Stop the sweeper and close every idle connection."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()

    async def tls_context(self) -> ssl.SSLContext:
        """The context upstream TLS is verified with (built once, on first use)."""
        if self._ssl_context is None:
            if self._ssl_loading is None:
                self._ssl_loading = asyncio.ensure_future(
                    asyncio.to_thread(client_ssl_context, None)
                )
            self._ssl_context = await asyncio.shield(self._ssl_loading)
        return self._ssl_context

    def _take_idle(self, key: _Key) -> _Conn | None:
        conns = self._idle.get(key)
        now = time.monotonic()
        while conns:
            conn = conns.pop()
            if conn.is_usable(now, self.idle_ttl):
                return conn
            conn.close()
        return None

    def release(self, conn: _Conn, *, reusable: bool) -> None:
        """Give a connection back (or close it when its framing is not known to be intact)."""
        conn.done()
        if not reusable or self._closed or conn.lost:
            conn.close()
            return
        conns = self._idle.get(conn.key)
        if conns is None:  # (not setdefault: no list made per call to be thrown away)
            conns = self._idle[conn.key] = []
        elif len(conns) >= self.max_idle_per_key:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        conns.append(conn)

    async def connect(self, key: _Key) -> _Conn:
        """A new connection for `key`; raises `UpstreamError` (502/504)."""
        scheme, host, address, port = key
        tls = scheme == "https"
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                context = await self.tls_context() if tls else None
                transport, conn = await loop.create_connection(
                    lambda: _Conn(key, loop),
                    address,
                    port,
                    ssl=context,
                    server_hostname=host if tls else None,
                )
        except TimeoutError:
            raise UpstreamError(
                504, responses.UPSTREAM_TIMEOUT, "connecting to the upstream timed out"
            ) from None
        except ssl.SSLError as exc:
            raise UpstreamError(
                502, responses.UPSTREAM_UNREACHABLE, f"upstream TLS failed ({exc.reason})"
            ) from None
        except OSError as exc:
            raise UpstreamError(
                502, responses.UPSTREAM_UNREACHABLE, f"upstream unreachable ({type(exc).__name__})"
            ) from None
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn


# Request bodies up to this size go out in the same write as the head; bigger ones in slices.
_COALESCE_MAX = 64 * 1024
_WRITE_SLICE = 64 * 1024
_METHODS_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})
_CRLF = "\r\n"
# RFC 9110 §9.2.2: what may be sent again when a connection fails before the answer.
_IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})


def _host_line(key: _Key) -> str:
    """The `Host:` field line of every request to `key`'s destination."""
    scheme, host, _, port = key
    return f"Host: {format_authority(host, port, scheme)}\r\n"


def _request_head(
    method: str, path: str, host_line: str, headers: list[tuple[str, str]], framing: str
) -> bytes:
    # The fields joined by C loops (`map` of `str.join`): no bytecode per field.
    fields = "\r\n".join(map(": ".join, headers))
    return (
        f"{method} {path} HTTP/1.1\r\n{host_line}{fields}{_CRLF if fields else ''}{framing}\r\n"
    ).encode("latin-1")


async def _send_streamed(
    conn: _Conn,
    request_head: Callable[[str], bytes],
    data: bytes | AsyncIterator[bytes],
    body_length: int | None,
) -> None:
    """Send a body too big for one write: slices of it, or the app's body as it comes."""
    if isinstance(data, bytes):
        # Not copied once more to prepend the head, and sent in slices of the same buffer
        # (memoryview: no copies), each drained before the next: a TLS transport encrypts what
        # it is given at once, so one 1 MB write would hold a second and third megabyte (the
        # TLS buffer and the ciphertext) per call.
        conn.write(request_head(f"Content-Length: {len(data)}\r\n"))
        view = memoryview(data)
        for start in range(0, len(view), _WRITE_SLICE):
            conn.write(view[start : start + _WRITE_SLICE])
            await conn.drain()
        return
    # A streamed body keeps the app's Content-Length when it had one (some APIs refuse
    # chunked uploads); otherwise it goes chunked.
    chunked = body_length is None
    framing = "Transfer-Encoding: chunked\r\n" if chunked else f"Content-Length: {body_length}\r\n"
    conn.write(request_head(framing))
    async for chunk in data:
        if chunk:
            conn.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
            await conn.drain()
    if chunked:
        conn.write(b"0\r\n\r\n")
    await conn.drain()


def _is_idempotent(method: str, headers: list[tuple[str, str]]) -> bool:
    """The request may be sent twice: its method says so, or its `Idempotency-Key` does."""
    return method in _IDEMPOTENT_METHODS or any(
        name.lower() == "idempotency-key" for name, _ in headers
    )


class UpstreamResponse:
    """An upstream answer whose head has arrived; the body is read with `body()` (httpcore's way).

    The connection goes back to the pool when the body was read to its end and both sides
    allow reuse (`close(complete=True)`), otherwise it is closed. Whoever holds a response
    must `close()` it exactly once.
    """

    __slots__ = ("_conn", "_pool", "headers", "length", "reason", "status")

    def __init__(self, pool: UpstreamPool, conn: _Conn) -> None:
        self._pool = pool
        self._conn = conn
        self.status: int = conn.status
        self.reason: bytes = conn.reason
        # The upstream's header fields for the app, bytes as received: without hop-by-hop and
        # framing fields, `X-Sharewall-*` and what `Connection:` names.
        values = conn.connection_values
        self.headers: list[tuple[bytes, bytes]] = (
            _without_named(conn.headers, values) if values else conn.headers
        )
        # The body's Content-Length; None when chunked or close-delimited.
        self.length: int | None = conn.length

    @property
    def is_chunked(self) -> bool:
        return self._conn.chunked

    @property
    def is_delimited(self) -> bool:
        """The body's end is known without the connection closing (length or chunked)."""
        return self.length is not None or self._conn.chunked

    @property
    def complete(self) -> bool:
        """The whole body is here (a small answer that came with its head): `whole_body()`."""
        return self._conn.complete

    @property
    def buffered(self) -> int:
        """Body bytes already received (nothing to wait for)."""
        return self._conn.buffered

    def whole_body(self) -> bytes:
        """The body of a `complete` response, at once."""
        assert self._conn.complete
        return self._conn.take_body()

    async def body(self) -> AsyncIterator[bytes]:
        """The decoded body, piece by piece, per its framing; `ValueError`/`OSError` if cut."""
        conn, read_timeout = self._conn, self._pool.read_timeout
        while chunk := await conn.read_body(read_timeout):
            yield chunk

    def close(self, *, complete: bool) -> None:
        """Done with the response: pool the connection when `complete` (the framing is intact:
        the body was read to its delimited end, or there was none) and the upstream allows it."""
        conn = self._conn
        self._pool.release(conn, reusable=complete and conn.reusable)


async def send_request(
    pool: UpstreamPool,
    *,
    method: str,
    scheme: str,
    destination: Destination,
    port: int,
    path: str,
    headers: list[tuple[str, str]],
    data: bytes | AsyncIterator[bytes] | None,
    body_length: int | None = None,
) -> UpstreamResponse:
    """Send one request to the checked address and return the response once its head arrived.

    `data` bytes are sent with a Content-Length; an async iterator is streamed with the app's
    `body_length`, else chunked. Raises `UpstreamError` (502 unreachable or malformed, 504
    timed out). An idempotent request (or one with an `Idempotency-Key`) that fails on a
    pooled connection the upstream closed meanwhile, before a byte of its answer, is retried
    once on a fresh one; any other is a 502, as Go's http.Transport does: the upstream may have
    acted on it before closing (RFC 9110 §9.2.2), and sending an SMS or a payment twice is the
    app's call to make, not the proxy's.
    """
    host = destination.host
    key = (scheme, host, destination.address, port)
    replayable = data is None or isinstance(data, bytes)
    conn = pool._take_idle(key) if replayable else None
    for attempt in (0, 1):
        reused = conn is not None
        if conn is None:
            conn = await pool.connect(key)
        deadline = conn.deadline
        assert deadline is not None
        try:
            conn.begin(method)
            if data is None or (isinstance(data, bytes) and len(data) <= _COALESCE_MAX):
                deadline.start(pool.head_timeout)
                body = data or b""
                framing = (
                    f"Content-Length: {len(body)}\r\n"
                    if body or method in _METHODS_WITH_BODY
                    else ""
                )
                # One write for head and body: no small-packet stall, no partial request.
                conn.write(_request_head(method, path, conn.host_line, headers, framing) + body)
                waiter = conn.head_waiter()
                if waiter is not None:
                    await waiter  # woken once the head is here, with what came of the body
                if not conn.head_done:
                    await conn.head()  # raises what broke the connection
            else:
                request_head = functools.partial(
                    _request_head, method, path, conn.host_line, headers
                )
                if replayable:
                    deadline.start(pool.head_timeout)
                    await _send_streamed(conn, request_head, data, body_length)
                    await conn.head()
                else:
                    # A streamed body: the deadline also covers reading it from the app.
                    async with asyncio.timeout(pool.head_timeout):
                        await _send_streamed(conn, request_head, data, body_length)
                        await conn.head()
            deadline.clear()
            return UpstreamResponse(pool, conn)
        except TimeoutError:
            conn.close()
            raise UpstreamError(
                504, responses.UPSTREAM_TIMEOUT, "the upstream did not answer in time"
            ) from None
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            conn.close()
            if deadline.expired:  # aborted at the deadline while writing the request
                raise UpstreamError(
                    504, responses.UPSTREAM_TIMEOUT, "the upstream did not answer in time"
                ) from None
            if (
                reused
                and attempt == 0
                and not conn.received
                and not isinstance(exc, ValueError)
                and _is_idempotent(method, headers)
            ):
                conn = None
                continue
            if isinstance(exc, ValueError):
                message = "the upstream sent a malformed response"
            else:
                message = f"upstream unreachable ({type(exc).__name__})"
            raise UpstreamError(502, responses.UPSTREAM_UNREACHABLE, message) from None
        except BaseException:
            conn.close()  # e.g. the app's streamed body broke off: the request is incomplete
            raise
    raise AssertionError("unreachable")  # the loop returns or raises
