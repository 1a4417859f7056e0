"""The client side of the proxy: HTTP/1.x forward proxy, CONNECT tunnels and TLS interception.

Every call is read (head, then body up to the inspection limit), resolved to a recipient and a
checked destination, inspected, decided, and only then sent upstream. Any exception of ours on
a call is answered 503 (fail closed), never a pass-through.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import httptools
import structlog

from proxy import responses
from proxy.authority import (
    BadAuthority,
    parse_authority_cached,
    split_absolute_url,
)
from proxy.decision import Call, Decision, new_decision_id
from proxy.decision_log import DecisionLog, decision_record, redact_path
from proxy.destinations import Destination, DestinationForbidden, Resolver
from proxy.inspect import inspect_call
from proxy.inspect.model import BODY_TOO_LARGE, Inspection
from proxy.metrics import ProxyMetrics
from proxy.recipients import RecipientIndex
from proxy.settings import Settings
from proxy.spool import SpoolUnavailable
from proxy.upstream import (
    UpstreamError,
    UpstreamPool,
    filter_request_headers,
    open_tunnel,
    splice,
    stream_response,
)

if TYPE_CHECKING:  # annotations only: the app builds these
    from proxy.certs import CertificateAuthority
    from proxy.decide import Decider

log = structlog.get_logger("sharewall.proxy")

PURPOSE_HEADER = "x-sharewall-purpose"
# Bodies above this are inspected in a worker thread so one big payload does not stall the loop.
INSPECT_IN_THREAD_BYTES = 64 * 1024
CONNECT_OK = b"HTTP/1.1 200 Connection Established\r\n\r\n"
# How much of a refused request's body is read and dropped before closing (lingering close).
DISCARD_MAX_BYTES = 16 << 20
DISCARD_SECONDS = 5.0


class BadRequest(Exception):
    """A request we cannot parse or accept: answered 400 (or `status`) and the connection closed."""

    def __init__(self, message: str, *, status: int = 400, code: str = responses.BAD_REQUEST):
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass
class _Message:
    """One request as the parser delivers it: head fields, then body chunks."""

    url: bytearray = field(default_factory=bytearray)
    headers: list[tuple[str, str]] = field(default_factory=list)
    first: dict[str, str] = field(default_factory=dict)  # lower-case name -> first value
    head_done: bool = False
    complete: bool = False
    body: deque[bytes] = field(default_factory=deque)
    method: str = ""
    version: str = "1.1"
    keep_alive: bool = True
    head_size: int = 0


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
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, settings: Settings
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.settings = settings
        self._parser = httptools.HttpRequestParser(self)
        self._messages: deque[_Message] = deque()
        self._current: _Message | None = None
        self.upgrade_rest: bytes | None = None  # bytes after a CONNECT head
        self._head_too_large = False
        self.tunnel_established = False  # "200 Connection Established" was sent
        self.tls = False  # the client stream was upgraded to TLS by us
        self.served = 0  # requests answered on this stream (TLS upgrade included)
        self.eof = False

    # -- httptools callbacks ------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._current = _Message()
        self._messages.append(self._current)

    def on_url(self, url: bytes) -> None:
        assert self._current is not None
        self._current.url += url
        self._current.head_size += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self._current is not None
        self._current.head_size += len(name) + len(value) + 4
        if self._current.head_size > self.settings.max_header_bytes:
            self._head_too_large = True
            raise _HeadTooLarge  # httptools re-raises it wrapped, as a parser error
        text_name, text_value = name.decode("latin-1"), value.decode("latin-1")
        self._current.headers.append((text_name, text_value))
        self._current.first.setdefault(text_name.lower(), text_value)

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

    async def _read(self, seconds: float) -> bytes:
        async with asyncio.timeout(seconds):
            data = await self.reader.read(65536)
        if not data:
            self.eof = True
        return data

    async def read_head(self, *, idle_timeout: float) -> RequestHead | None:
        """The next request head; None when the client closed (or idled out) between requests."""
        loop = asyncio.get_running_loop()
        deadline: float | None = None
        while not (self._messages and self._messages[0].head_done):
            if self.eof or self.upgrade_rest is not None:
                return None
            started = bool(self._messages) and (self._messages[0].url or self._messages[0].headers)
            if deadline is None and started:
                deadline = loop.time() + self.settings.header_timeout
            if deadline is None:
                try:
                    data = await self._read(idle_timeout)
                except TimeoutError:
                    return None
                deadline = loop.time() + self.settings.header_timeout
            else:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise TimeoutError
                data = await self._read(remaining)
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
            async with asyncio.timeout(self.settings.body_timeout):
                while not m.complete and size <= limit:
                    data = await self.reader.read(65536)
                    if not data:
                        self.eof = True
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
                data = await self._read(self.settings.body_timeout)
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


@dataclass(frozen=True, slots=True)
class Tunnel:
    """An intercepted CONNECT: where its requests go, and the purpose the CONNECT declared."""

    host: str
    port: int
    purpose: str | None  # X-Sharewall-Purpose on the CONNECT (e.g. curl --proxy-header)


@dataclass
class ProxyContext:
    """What the listener needs from the app; `index` and `ready` change on snapshot reloads."""

    settings: Settings
    decider: Decider
    resolver: Resolver
    upstream: UpstreamPool
    decision_log: DecisionLog
    metrics: ProxyMetrics
    destination_forbidden: Callable[[Call, str], Decision]
    certificate_authority: CertificateAuthority | None = None
    index: RecipientIndex | None = None
    open_tunnels: int = 0


@dataclass
class _Timing:
    start: float = field(default_factory=time.perf_counter)
    inspect_ms: float | None = None
    policy_ms: float | None = None
    upstream_ms: float | None = None
    blocked: bool = False  # we answered 403/503 ourselves (whatever the mode)
    recorded: bool = False  # the call's record is written (before its refusal left)

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.start) * 1000.0


class ProxyServer:
    """Accepts client connections and serves each one until it closes, idles or errs."""

    def __init__(self, ctx: ProxyContext) -> None:
        self.ctx = ctx
        self.settings = ctx.settings
        self._server: asyncio.Server | None = None
        self._sock: socket.socket | None = None
        self._busy: dict[asyncio.Task[Any], bool] = {}
        self._closing = False
        self._slots = asyncio.Semaphore(self.settings.max_connections)

    def bind(self) -> tuple[str, int]:
        """Bind the listening socket (before serving, so the resolver can know our address)."""
        host, port = self.settings.listen
        self._sock = socket.create_server(
            (host, port),
            family=socket.AF_INET6 if ":" in host else socket.AF_INET,
            backlog=1024,
            reuse_port=False,
        )
        bound = self._sock.getsockname()
        return bound[0], bound[1]

    async def start(self) -> None:
        """Start accepting connections on the bound socket."""
        assert self._sock is not None
        self._server = await asyncio.start_server(self._on_client, sock=self._sock)

    async def close(self) -> None:
        """Stop accepting, let in-flight calls finish up to the drain timeout, then cut the rest."""
        self._closing = True
        if self._server is not None:
            self._server.close()
        for task, busy in list(self._busy.items()):
            if not busy:
                task.cancel()
        pending = set(self._busy)
        if pending:
            _done, pending = await asyncio.wait(pending, timeout=self.settings.drain_timeout)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=1.0)
            log.warning("proxy.drain_timeout", cut=len(pending))

    def _set_busy(self, busy: bool) -> None:
        task = asyncio.current_task()
        if task is not None and task in self._busy:
            self._busy[task] = busy

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if self._closing or self._slots.locked():
            if not self._closing:
                log.warning("proxy.connection_refused", reason="max_connections")
                with contextlib.suppress(Exception):
                    writer.write(
                        responses.error(
                            503,
                            responses.TOO_MANY_CONNECTIONS,
                            "too many client connections",
                            keep_alive=False,
                        )
                    )
            writer.close()
            return
        sock = writer.get_extra_info("socket")
        if sock is not None:
            # asyncio only disables Nagle for sockets whose proto is IPPROTO_TCP, and ours
            # (socket.create_server) say 0: without this a keep-alive response waits ~40 ms
            # for the client's delayed ACK.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        async with self._slots:
            self._busy[task] = False
            self.ctx.metrics.open_connections.inc()
            conn = ClientConnection(reader, writer, self.settings)
            try:
                await self._serve(conn)
            except asyncio.CancelledError:
                pass
            except (ConnectionError, TimeoutError, BadRequest):
                pass
            except Exception:
                log.exception("proxy.connection_error")
            finally:
                self._busy.pop(task, None)
                self.ctx.metrics.open_connections.dec()
                writer.close()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def _serve(self, conn: ClientConnection, tunnel: Tunnel | None = None) -> None:
        """Serve requests on one connection (`tunnel`: inside an intercepted CONNECT)."""
        while not self._closing:
            try:
                # A new connection gets the head timeout to say anything at all (slowloris);
                # a kept-alive one may idle between requests.
                idle = self.settings.idle_timeout if conn.served else self.settings.header_timeout
                head = await conn.read_head(idle_timeout=idle)
            except BadRequest as exc:
                await self._bad_request(conn, exc)
                return
            if head is None:
                return
            self._set_busy(True)
            self.ctx.metrics.inflight.inc()
            try:
                if head.method == "CONNECT":
                    if tunnel is not None:
                        raise BadRequest("CONNECT inside a tunnel")
                    await self._connect_failing_closed(conn, head)
                    return
                keep_alive = await self._request(conn, head, tunnel)
            except BadRequest as exc:
                await self._bad_request(conn, exc)
                return
            finally:
                self.ctx.metrics.inflight.dec()
                self._set_busy(False)
            conn.served += 1
            if not keep_alive:
                return

    async def _bad_request(self, conn: ClientConnection, exc: BadRequest) -> None:
        log.info("proxy.bad_request", status=exc.status, error=exc.code, reason=str(exc))
        if not conn.tunnel_established or conn.tls:
            await conn.send(responses.error(exc.status, exc.code, str(exc), keep_alive=False))

    async def _connect_failing_closed(self, conn: ClientConnection, head: RequestHead) -> None:
        """`_connect`, where a bug of ours before the tunnel exists is a 503, never a tunnel."""
        try:
            await self._connect(conn, head)
        except (BadRequest, asyncio.CancelledError, ConnectionError):
            raise
        except Exception:
            decision_id = new_decision_id()
            log.exception("egress.internal_error", decision_id=decision_id, method="CONNECT")
            if not conn.tunnel_established:
                with contextlib.suppress(Exception):
                    await conn.send(responses.unavailable(decision_id, keep_alive=False))

    # -- one plain (or intercepted) request ------------------------------------------------------

    async def _request(
        self, conn: ClientConnection, head: RequestHead, tunnel: Tunnel | None
    ) -> bool:
        """Decide and forward one request; True when the connection may serve another one."""
        if head.header("upgrade") is not None and head.method != "CONNECT":
            raise BadRequest("protocol upgrades are not supported through the proxy")
        try:
            if tunnel is not None:
                if not head.target.startswith("/"):
                    raise BadAuthority("requests inside a tunnel must be in origin-form")
                scheme, host, port, path = "https", tunnel.host, tunnel.port, head.target
            else:
                scheme, host, port, path = split_absolute_url(head.target)
            host_header = head.header("host")
            if host_header is not None:
                default = 443 if scheme == "https" else 80
                if parse_authority_cached(host_header, default_port=default) != (host, port):
                    raise BadAuthority("Host header disagrees with the request target")
            elif head.version == "1.1":
                raise BadAuthority("HTTP/1.1 request without a Host header")
        except BadAuthority as exc:
            raise BadRequest(str(exc)) from None

        if (head.header("expect") or "").lower() == "100-continue" and not conn.body_complete:
            await conn.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        timing = _Timing()
        decision_id = new_decision_id()
        is_head = head.method == "HEAD"
        keep_alive = head.keep_alive and not self._closing
        version = "1.0" if head.version == "1.0" else "1.1"
        record_args: dict[str, Any] = {
            "method": head.method,
            "host": host,
            "port": port,
            "path": path,
            "inspected": True,
            "tunnel": tunnel is not None,
        }
        status: int | None = None
        decision: Decision | None = None
        try:
            body, truncated = await conn.read_body(self.settings.limits.max_body_bytes)
            keep_alive = keep_alive and not truncated
            purpose = (
                head.header(PURPOSE_HEADER)
                or (tunnel.purpose if tunnel is not None else None)
                or self.settings.default_purpose
            )
            index = self.ctx.index
            recipient = index.resolve(host, port) if index is not None else None
            tls_upstream = scheme == "https" or bool(recipient and recipient.tls_origination)
            up_scheme = "https" if tls_upstream else "http"
            up_port = 443 if (scheme == "http" and tls_upstream and port == 80) else port
            call = Call(
                method=head.method,
                scheme=scheme,
                host=host,
                port=port,
                # Redacted: an OPA sidecar may log its input, and no rule reads credentials.
                path=redact_path(path),
                inspected=True,
                tls_upstream=tls_upstream,
                recipient_id=recipient.id if recipient else None,
                purpose=purpose,
                source_workload=self.settings.source_workload,
                source_namespace=self.settings.source_namespace,
                request_id=decision_id,
            )
            # What goes upstream is also exactly what is inspected: filtered once.
            up_headers = filter_request_headers(head.headers)
            destination: Destination | None = None
            unresolved: OSError | None = None
            try:
                destination = await self.ctx.resolver.resolve(host, up_port)
            except DestinationForbidden as exc:
                decision = self.ctx.destination_forbidden(call, exc.detail)
            except OSError as exc:
                unresolved = exc  # decided first: a blocked call is a 403 whatever DNS says
            if decision is None:
                decision = await self._decide(head, call, path, up_headers, body, truncated, timing)
            status = await self._answer_or_forward(
                conn,
                head,
                up_headers,
                decision,
                body,
                truncated,
                destination,
                unresolved,
                up_scheme=up_scheme,
                up_port=up_port,
                path=path,
                timing=timing,
                keep_alive=keep_alive,
                version=version,
                record_args=record_args,
            )
            if status < 0:  # the response could not be completed: the stream is unusable
                status = -status
                keep_alive = False
            if not conn.body_complete:
                # An undrained body would be read as the next request: close, but first read
                # and drop some of it (RFC 9112 §9.6): closing on unread bytes resets the
                # connection and the app may never see the 403 it was sent.
                keep_alive = False
                await conn.discard_body(DISCARD_MAX_BYTES, DISCARD_SECONDS)
            if keep_alive:
                conn.finish_message()
            return keep_alive
        except (BadRequest, asyncio.CancelledError, ConnectionError):
            raise
        except Exception:
            log.exception("egress.internal_error", decision_id=decision_id)
            decision = Decision(decision_id=decision_id, action="deny", fault="internal_error")
            status = 503
            timing.blocked = True
            with contextlib.suppress(Exception):
                await conn.send(
                    responses.unavailable(
                        decision_id, keep_alive=False, head=is_head, version=version
                    )
                )
            return False
        finally:
            if decision is not None and not timing.recorded:
                self._log(decision, record_args, status, timing, blocked=timing.blocked)

    async def _decide(
        self,
        head: RequestHead,
        call: Call,
        path: str,
        up_headers: list[tuple[str, str]],
        body: bytes,
        truncated: bool,
        timing: _Timing,
    ) -> Decision:
        # The inspector sees the real path (query included); the policy input a redacted one.
        url = f"{call.scheme}://{_authority(call.host, call.port, call.scheme)}{path}"
        t0 = time.perf_counter()
        # Inspected: exactly the headers that go upstream (`up_headers`: not
        # Proxy-Authorization, not X-Sharewall-*): data that never leaves the pod is not
        # shared with anyone.
        args = (head.method, url, up_headers, body)
        kwargs = {"limits": self.settings.limits, "body_truncated": truncated}
        if len(body) > INSPECT_IN_THREAD_BYTES:
            inspection = await asyncio.to_thread(inspect_call, *args, **kwargs)
        else:
            inspection = inspect_call(*args, **kwargs)
        if truncated and BODY_TOO_LARGE not in inspection.problems:
            # Belt and braces: the policy must see that it did not get every byte.
            inspection = Inspection(
                findings=inspection.findings, problems=(*inspection.problems, BODY_TOO_LARGE)
            )
        t1 = time.perf_counter()
        decision = await self.ctx.decider.decide(call, inspection)
        timing.inspect_ms = (t1 - t0) * 1000.0
        timing.policy_ms = (time.perf_counter() - t1) * 1000.0
        return decision

    async def _answer_or_forward(
        self,
        conn: ClientConnection,
        head: RequestHead,
        up_headers: list[tuple[str, str]],
        decision: Decision,
        body: bytes,
        truncated: bool,
        destination: Destination | None,
        unresolved: OSError | None,
        *,
        up_scheme: str,
        up_port: int,
        path: str,
        timing: _Timing,
        keep_alive: bool,
        version: str,
        record_args: dict[str, Any],
    ) -> int:
        """Answer a block/fault ourselves or stream the upstream's answer; the status sent."""
        is_head = head.method == "HEAD"
        report = self.settings.mode == "report"
        forbidden = DestinationForbidden.code in decision.reason_codes
        refused = decision.unavailable or (not decision.allow and not report) or forbidden
        if refused:
            timing.blocked = True
            status = 503 if decision.unavailable else 403
            decision = await self._commit_refusal(decision, record_args, status, timing)
        # A fault fails closed in every mode: report mode relaxes the policy, not the proxy.
        if decision.unavailable:
            await conn.send(
                responses.unavailable(
                    decision.decision_id,
                    keep_alive=keep_alive and conn.body_complete,
                    head=is_head,
                    version=version,
                )
            )
            return 503
        if refused:
            # A forbidden destination stays forbidden in report mode: there is no checked
            # address to connect to.
            await conn.send(
                responses.blocked(
                    decision,
                    keep_alive=keep_alive and conn.body_complete,
                    head=is_head,
                    version=version,
                )
            )
            return 403
        if destination is None:
            message = f"cannot resolve the destination ({type(unresolved).__name__})"
            await conn.send(
                responses.error(
                    502,
                    responses.UPSTREAM_UNREACHABLE,
                    message,
                    keep_alive=keep_alive and conn.body_complete,
                    head=is_head,
                    version=version,
                )
            )
            return 502
        data: bytes | AsyncIterator[bytes] | None
        if truncated:
            data = _chain(body, conn.body_rest())
        else:
            data = body if (body or head.method in ("POST", "PUT", "PATCH")) else None
        t0 = time.perf_counter()
        try:
            return await stream_response(
                self.ctx.upstream,
                conn.writer,
                method=head.method,
                scheme=up_scheme,
                destination=destination,
                port=up_port,
                path=path,
                headers=up_headers,
                data=data,
                client_version=version,
                keep_alive=keep_alive,
                on_head=lambda: _mark(timing, t0),
                body_length=_declared_length(head) if truncated else None,
            )
        except UpstreamError as exc:
            await conn.send(
                responses.error(
                    exc.status,
                    exc.code,
                    exc.message,
                    keep_alive=False,
                    head=is_head,
                    version=version,
                )
            )
            return -exc.status

    # -- CONNECT -------------------------------------------------------------------------------

    async def _connect(self, conn: ClientConnection, head: RequestHead) -> None:
        try:
            host, port = parse_authority_cached(head.target, default_port=443)
        except BadAuthority as exc:
            raise BadRequest(str(exc)) from None
        if conn.upgrade_rest:
            raise BadRequest("data sent before the tunnel was established")
        index = self.ctx.index
        recipient = index.resolve(host, port) if index is not None else None
        ca = self.ctx.certificate_authority
        timing = _Timing()
        decision_id = new_decision_id()
        purpose = head.header(PURPOSE_HEADER) or self.settings.default_purpose
        call = Call(
            method="CONNECT",
            scheme="https",
            host=host,
            port=port,
            path="",
            inspected=False,
            tls_upstream=True,
            recipient_id=recipient.id if recipient else None,
            purpose=purpose,
            source_workload=self.settings.source_workload,
            source_namespace=self.settings.source_namespace,
            request_id=decision_id,
        )
        record_args: dict[str, Any] = {
            "method": "CONNECT",
            "host": host,
            "port": port,
            "path": "",
            "inspected": False,
            "tunnel": True,
        }
        intercept = ca is not None and recipient is not None and recipient.inspect_tls
        destination: Destination | None = None
        try:
            destination = await self.ctx.resolver.resolve(host, port)
        except DestinationForbidden as exc:
            decision = self.ctx.destination_forbidden(call, exc.detail)
            decision = await self._commit_refusal(decision, record_args, 403, timing)
            await conn.send(_refusal(decision))
            return
        except OSError:
            destination = None  # decided first: a blocked tunnel is a 403 whatever DNS says
        if intercept and destination is not None:
            tunnel = Tunnel(host, port, head.header(PURPOSE_HEADER))
            await self._intercept(conn, tunnel, ca)
            return
        decision = await self._decide_tunnel(call, timing)
        report = self.settings.mode == "report"
        if decision.unavailable or (not decision.allow and not report):
            # A fault fails closed in report mode too.
            status = 503 if decision.unavailable else 403
            decision = await self._commit_refusal(decision, record_args, status, timing)
            await conn.send(_refusal(decision))
            return
        if destination is None:
            await conn.send(
                responses.error(
                    502,
                    responses.UPSTREAM_UNREACHABLE,
                    f"cannot resolve {host}",
                    keep_alive=False,
                )
            )
            self._log(decision, record_args, 502, timing, blocked=False)
            return
        if self.ctx.open_tunnels >= self.settings.max_tunnels:
            await conn.send(
                responses.error(
                    503, responses.TOO_MANY_TUNNELS, "too many open tunnels", keep_alive=False
                )
            )
            self._log(decision, record_args, 503, timing, blocked=False)
            return
        t0 = time.perf_counter()
        try:
            up_reader, up_writer = await open_tunnel(
                destination, connect_timeout=self.settings.upstream_connect_timeout
            )
        except UpstreamError as exc:
            await conn.send(responses.error(exc.status, exc.code, exc.message, keep_alive=False))
            self._log(decision, record_args, exc.status, timing, blocked=False)
            return
        timing.upstream_ms = (time.perf_counter() - t0) * 1000.0
        await conn.send(CONNECT_OK)
        conn.tunnel_established = True
        self._log(decision, record_args, 200, timing, blocked=False)
        self.ctx.open_tunnels += 1
        self.ctx.metrics.open_tunnels.inc()
        try:
            sent, received = await splice(
                conn.reader, conn.writer, up_reader, up_writer, idle=self.settings.idle_timeout
            )
            log.info(
                "tunnel.closed",
                decision_id=decision.decision_id,
                host=host,
                port=port,
                bytes_out=sent,
                bytes_in=received,
            )
        finally:
            self.ctx.open_tunnels -= 1
            self.ctx.metrics.open_tunnels.dec()

    async def _decide_tunnel(self, call: Call, timing: _Timing) -> Decision:
        t0 = time.perf_counter()
        decision = await self.ctx.decider.decide(call, Inspection())
        timing.policy_ms = (time.perf_counter() - t0) * 1000.0
        return decision

    async def _intercept(
        self, conn: ClientConnection, tunnel: Tunnel, ca: CertificateAuthority
    ) -> None:
        """Terminate the client's TLS with a minted leaf, then serve requests inside it."""
        context = await ca.ssl_context_for_async(tunnel.host)
        await conn.send(CONNECT_OK)
        conn.tunnel_established = True
        try:
            await conn.writer.start_tls(context, ssl_handshake_timeout=self.settings.header_timeout)
        except (OSError, TimeoutError) as exc:
            log.info(
                "tunnel.tls_failed", host=tunnel.host, port=tunnel.port, error=type(exc).__name__
            )
            return
        conn.reset_parser()
        conn.tls = True
        conn.served += 1  # the CONNECT was a request: the tunnel may idle like a kept-alive one
        self.ctx.metrics.inflight.dec()
        self._set_busy(False)
        try:
            await self._serve(conn, tunnel=tunnel)
        finally:
            self.ctx.metrics.inflight.inc()
            self._set_busy(True)

    # -- logging ---------------------------------------------------------------------------------

    async def _commit_refusal(
        self, decision: Decision, args: dict[str, Any], status: int, timing: _Timing
    ) -> Decision:
        """Make a refused call's record durable before the refusal leaves; the decision to answer.

        When the spool cannot take the record, the answer is a 503 fault (`spool_unavailable`)
        instead: no refusal is given without its record, and nothing is forwarded.
        """
        timing.recorded = True
        record = self._record(decision, args, status, timing, blocked=True)
        try:
            await self.ctx.decision_log.commit(record)
            return decision
        except SpoolUnavailable:
            if decision.fault is None:
                decision = replace(decision, fault="spool_unavailable")
            record = self._record(decision, args, 503, timing, blocked=True)
            self.ctx.decision_log.emit(record, spool=False)
            return decision

    def _log(
        self,
        decision: Decision,
        args: dict[str, Any],
        status: int | None,
        timing: _Timing,
        *,
        blocked: bool,
    ) -> None:
        self.ctx.decision_log.emit(self._record(decision, args, status, timing, blocked=blocked))

    def _record(
        self,
        decision: Decision,
        args: dict[str, Any],
        status: int | None,
        timing: _Timing,
        *,
        blocked: bool,
    ) -> dict[str, Any]:
        return decision_record(
            decision=decision,
            mode=self.settings.mode,
            status=status,
            source_workload=self.settings.source_workload,
            source_namespace=self.settings.source_namespace,
            latency_ms=timing.elapsed_ms(),
            inspect_ms=timing.inspect_ms,
            policy_ms=timing.policy_ms,
            upstream_ms=timing.upstream_ms,
            blocked=blocked,
            **args,
        )


def _refusal(decision: Decision) -> bytes:
    """The answer to a refused CONNECT: 503 for a fault, else 403 (the connection closes)."""
    if decision.unavailable:
        return responses.unavailable(decision.decision_id, keep_alive=False)
    return responses.blocked(decision, keep_alive=False)


def _mark(timing: _Timing, t0: float) -> None:
    timing.upstream_ms = (time.perf_counter() - t0) * 1000.0


def _authority(host: str, port: int, scheme: str) -> str:
    h = f"[{host}]" if ":" in host else host
    return h if port == (443 if scheme == "https" else 80) else f"{h}:{port}"


def _declared_length(head: RequestHead) -> int | None:
    """The app's Content-Length (llhttp validated it), unless the body came chunked."""
    if head.header("transfer-encoding") is not None:
        return None
    value = head.header("content-length")
    return int(value) if value is not None and value.isdigit() else None


async def _chain(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    if first:
        yield first
    async for chunk in rest:
        yield chunk
