"""Client connection handling: accept, serve requests one after another, dispatch each call.

Each request is named (absolute-form target, or origin-form inside an intercepted CONNECT),
built into an `Exchange`, decided by `proxy.pipeline.decide_exchange` and given its outcome by
`proxy.outcome.outcome_of`; a refusal is written from its outcome, an allowed call goes through
the upstream client and its response is relayed back. Any exception of ours on a call is
answered 503 (fail closed), never a pass-through.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
import ssl as ssl_module
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import structlog

from proxy import responses
from proxy.client_identity import ClientIdentityError, identity_from_certificate
from proxy.decision import Decision, new_decision_id
from proxy.decision_log import DecisionLog
from proxy.destinations import Resolver
from proxy.exchange import PURPOSE_HEADER, Entry, Exchange, Source, Timings, new_exchange
from proxy.http1 import BadRequest, ClientConnection, RequestHead
from proxy.metrics import ProxyMetrics
from proxy.outcome import Outcome
from proxy.pipeline import (
    check_destination,
    commit_refusal,
    decide_exchange,
    fail_exchange,
    record_exchange,
    settle,
)
from proxy.relay import relay_response
from proxy.settings import LISTEN_BACKLOG, Settings
from proxy.tunnel import open_tunnel, splice
from proxy.upstream import UpstreamError, UpstreamPool, send_request
from sharewall.hosts import (
    DEFAULT_PORTS,
    BadAuthority,
    Target,
    parse_authority_cached,
    parse_url,
)
from sharewall.recipients import RecipientIndex

if TYPE_CHECKING:  # annotations only: the app builds these
    from proxy.certs import CertificateAuthority
    from proxy.decide import Decider
    from proxy.transparent import Captured, TransparentListener

log = structlog.get_logger("sharewall.proxy")

CONNECT_OK = b"HTTP/1.1 200 Connection Established\r\n\r\n"
# How much of a refused request's body is read and dropped before closing (lingering close).
DISCARD_MAX_BYTES = 16 << 20
DISCARD_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class Tunnel:
    """An intercepted CONNECT (or captured TLS): where its requests go, and the declared purpose."""

    host: str
    port: int
    purpose: str | None  # X-Sharewall-Purpose on the CONNECT (e.g. curl --proxy-header)
    connected_to: tuple[str, int] | None = None  # captured TLS: the kernel's original destination
    scheme: str = "https"  # "http": the app sent plain HTTP inside its CONNECT


@dataclass
class ProxyContext:
    """What the listener needs from the app; `index` changes on snapshot reloads."""

    settings: Settings
    decider: Decider
    resolver: Resolver
    upstream: UpstreamPool
    decision_log: DecisionLog
    metrics: ProxyMetrics
    certificate_authority: CertificateAuthority | None = None
    index: RecipientIndex | None = None
    open_tunnels: int = 0
    # Egress gateway (--client-ca): the listener's TLS, requiring a client certificate.
    client_tls: ssl_module.SSLContext | None = None

    @functools.cached_property
    def source(self) -> Source:
        """The calling workload, from the sidecar's own settings (fixed for the process)."""
        s = self.settings
        return Source(s.source_workload, s.source_namespace)


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
        self._accepting: asyncio.Task[None] | None = None  # the gateway's accept loop
        self._handshakes: set[asyncio.Task[None]] = set()
        self._transparent: TransparentListener | None = None

    def bind(self) -> tuple[str, int]:
        """Bind the listening socket (before serving, so the resolver can know our address)."""
        host, port = self.settings.listen
        self._sock = socket.create_server(
            (host, port),
            family=socket.AF_INET6 if ":" in host else socket.AF_INET,
            backlog=LISTEN_BACKLOG,
            reuse_port=self.settings.reuse_port,  # the workers of `--workers N` share the port
        )
        bound = self._sock.getsockname()
        return bound[0], bound[1]

    def bind_transparent(self, address: tuple[str, int]) -> tuple[str, int]:
        """Bind the transparent listener (`--transparent-listen`); its bound address."""
        # Imported here: a proxy without `--transparent-listen` never loads the first-bytes
        # naming (ClientHello, SO_ORIGINAL_DST).
        from proxy.transparent import TransparentListener

        self._transparent = TransparentListener(self, address)
        return self._transparent.bind()

    async def start(self) -> None:
        """Start accepting connections on the bound socket(s)."""
        assert self._sock is not None
        if self.ctx.client_tls is None:
            # create_server listens again, with its own backlog (100) unless given ours.
            self._server = await asyncio.get_running_loop().create_server(
                self._new_connection, sock=self._sock, backlog=LISTEN_BACKLOG
            )
        else:
            # The gateway accepts by itself and hands each socket to the loop's TLS handshake
            # (`_connection`), which raises on a refused client certificate: a TLS
            # `create_server` drops such clients without a word, and `start_tls` after a plain
            # accept can lose the ClientHello to the parser (uvloop reads at once).
            self._sock.setblocking(False)
            self._accepting = asyncio.create_task(self._accept_gateway_clients(self._sock))
        if self._transparent is not None:
            await self._transparent.start()

    async def close(self) -> None:
        """Stop accepting, let in-flight calls finish up to the drain timeout, then cut the rest."""
        self._closing = True
        if self._server is not None:
            self._server.close()
        if self._accepting is not None:
            self._accepting.cancel()
        for task in list(self._handshakes):
            task.cancel()
        if self._transparent is not None:
            await self._transparent.close()
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

    def _set_busy(self, busy: bool, task: asyncio.Task[Any] | None = None) -> None:
        task = task or asyncio.current_task()
        if task is not None and task in self._busy:
            self._busy[task] = busy

    def is_serving(self, task: asyncio.Task[Any]) -> bool:
        """`task` is serving a client connection (it drains on close instead of being cut)."""
        return task in self._busy

    async def serve_captured(self, sock: socket.socket, captured: Captured) -> None:
        """Serve a connection the kernel redirected to us, named by `proxy.transparent`.

        Plain HTTP is served request by request like absolute-form calls (each request named by
        its Host and checked against the connected address). TLS and anything else is one
        exchange: an `inspect_tls` recipient (with a CA) whose name leads to the connected
        address is intercepted, the handshake performed on the app's own ClientHello (still
        unread in the socket); everything else is decided on the name alone and spliced with
        the ClientHello replayed, or closed.
        """
        identity = captured.identity
        if identity.protocol == "http":
            await self._on_client(await self._connection(sock), captured)
            return
        named = identity.protocol == "tls" and identity.name is not None
        ex = new_exchange(
            entry="transparent",
            method="CONNECT",
            scheme="https" if identity.protocol == "tls" else "tcp",
            host=identity.name if named else captured.address,  # type: ignore[arg-type]
            port=captured.port,
            path="",
            raw_headers=[],
            index=self.ctx.index,
            source=self.ctx.source,
            default_purpose=self.settings.default_purpose,
            connected_to=captured.connected_to,
            unidentified=None if named else (identity.why or identity.protocol),
            spliced=True,
        )
        ca = self.ctx.certificate_authority
        if named and ca is not None and ex.recipient is not None and ex.recipient.inspect_tls:
            denied = await check_destination(ex, self.ctx.resolver)
            if denied is None and ex.destination is not None:
                tunnel = Tunnel(ex.host, ex.port, None, captured.connected_to)
                try:
                    context = await ca.ssl_context_for_async(ex.host)
                    conn = await self._connection(
                        sock, ssl=context, handshake_timeout=self.settings.header_timeout
                    )
                except Exception as exc:
                    # The app gets a closed connection, and the line says why.
                    sock.close()
                    self._tunnel_failed(ex, exc)
                    return
                await self._on_client(conn, tunnel=tunnel)
                return
        # Not HTTP (or not intercepted): raw bytes, the app's ClientHello first.
        await self._on_client(await self._connection(sock, raw=True), captured, exchange=ex)

    async def _captured_stream(self, conn: ClientConnection, ex: Exchange) -> None:
        """Decide a captured TLS (or unnamed) connection; splice it, or close it unanswered."""
        # Not HTTP on this stream: a refusal is a closed connection, never an HTTP answer.
        conn.tunnel_established = True
        self._set_busy(True)
        self.ctx.metrics.inflight.inc()
        try:
            await decide_exchange(ex, self.ctx.decider, resolver=self.ctx.resolver)
            outcome = settle(ex, mode=self.settings.mode)
            if not outcome.is_sent:
                # Recorded (durably) as any refusal; the answer is the closed connection.
                mode = self.settings.mode
                await commit_refusal(ex, self.ctx.decision_log, mode=mode, answered=False)
                record_exchange(ex, self.ctx.decision_log, mode=mode)
                return
            await self._splice(conn, ex, announce=False)
        except (asyncio.CancelledError, ConnectionError):
            raise
        except Exception:
            # Fails closed: a bug of ours closes the connection, nothing is relayed.
            log.exception("egress.internal_error", decision_id=ex.decision_id, method="CONNECT")
        finally:
            self.ctx.metrics.inflight.dec()
            self._set_busy(False)

    def _new_connection(self) -> ClientConnection:
        """The protocol of a connection accepted by the plain listener (served by a task)."""
        return ClientConnection(self.settings, self.ctx.source, on_connect=self._start_serving)

    def _start_serving(self, conn: ClientConnection) -> None:
        asyncio.get_running_loop().create_task(self._on_client(conn))

    async def _connection(
        self,
        sock: socket.socket,
        *,
        ssl: ssl_module.SSLContext | None = None,
        handshake_timeout: float | None = None,
        raw: bool = False,
    ) -> ClientConnection:
        """A connection over a socket we accepted; with `ssl`, TLS's server side from its first byte.

        The TLS transport reads the ClientHello still queued in the socket, so the handshake is
        the app's own (a plain transport made first would read it into the parser, out of the
        handshake's reach). `raw`: the bytes are not HTTP (a captured connection spliced as is).
        """
        conn = ClientConnection(self.settings, self.ctx.source, raw=raw)
        await asyncio.get_running_loop().connect_accepted_socket(
            lambda: conn, sock, ssl=ssl, ssl_handshake_timeout=handshake_timeout if ssl else None
        )
        return conn

    async def _on_client(
        self,
        conn: ClientConnection,
        captured: Captured | None = None,
        exchange: Exchange | None = None,
        tunnel: Tunnel | None = None,
    ) -> None:
        """Serve one client connection (its calls' source is the connection's)."""
        task = asyncio.current_task()
        assert task is not None
        writer = conn.writer
        if self._closing or self._slots.locked():
            if not self._closing and (captured is None or captured.identity.protocol == "http"):
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
            conn.close()
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
            try:
                if tunnel is not None:  # captured TLS, intercepted: the handshake is done
                    conn.tunnel_established = conn.http_in_tunnel = True
                    await self._serve(conn, tunnel=tunnel)
                elif captured is None:
                    await self._serve(conn)
                elif exchange is None:
                    await self._serve(conn, captured=captured)
                else:
                    await self._captured_stream(conn, exchange)
            except asyncio.CancelledError:
                pass
            except (ConnectionError, TimeoutError, BadRequest):
                pass
            except Exception:
                log.exception("proxy.connection_error")
            finally:
                self._busy.pop(task, None)
                self.ctx.metrics.open_connections.dec()
                conn.close()
                writer.close()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def _accept_gateway_clients(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                client, _ = await loop.sock_accept(sock)
            except OSError as exc:  # out of descriptors and the like: keep listening
                log.warning("proxy.accept_failed", error=type(exc).__name__)
                await asyncio.sleep(0.1)
                continue
            task = asyncio.create_task(self._on_gateway_client(client))
            self._handshakes.add(task)
            task.add_done_callback(self._handshakes.discard)

    async def _on_gateway_client(self, sock: socket.socket) -> None:
        """Handshake with a gateway client, take its source from its certificate, serve it.

        A client that fails the handshake (no certificate, another CA, expired, not TLS) or
        whose certificate names no workload is logged and refused: its source is never guessed.
        """
        peer = sock.getpeername()
        client = f"{peer[0]}:{peer[1]}"
        if self._closing or self._slots.locked():
            if not self._closing:
                log.warning("proxy.connection_refused", reason="max_connections", client=client)
            sock.close()
            return
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            conn = await self._connection(
                sock, ssl=self.ctx.client_tls, handshake_timeout=self.settings.header_timeout
            )
        except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
            sock.close()
            self._refuse_client(
                "handshake", getattr(exc, "reason", None) or type(exc).__name__, client
            )
            return
        # Handshaken: from now on a call may be in flight, which close() drains, not cancels.
        task = asyncio.current_task()
        if task is not None:
            self._handshakes.discard(task)
        ssl_object = conn.writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        try:
            if not der:
                raise ClientIdentityError("no client certificate")
            identity = identity_from_certificate(der)
        except ClientIdentityError as exc:
            conn.writer.close()
            conn.close()
            self._refuse_client("no_workload", str(exc), client)
            return
        conn.source = Source(identity.workload, identity.namespace)
        await self._on_client(conn)

    def _refuse_client(self, reason: str, detail: str, client: str | None) -> None:
        log.warning("proxy.client_refused", reason=reason, detail=detail, client=client)
        self.ctx.metrics.clients_refused.labels(reason=reason).inc()

    async def _serve(
        self,
        conn: ClientConnection,
        tunnel: Tunnel | None = None,
        captured: Captured | None = None,
    ) -> None:
        """Serve requests on one connection.

        `tunnel`: inside an intercepted CONNECT (or intercepted captured TLS); `captured`: a
        plain-HTTP connection redirected by the kernel.
        """
        task = asyncio.current_task()  # once per connection, not twice per request
        busy = self._busy
        # `_set_busy` inline: the task is in `_busy` while `_on_client` serves the connection.
        tracked = task is not None and task in busy
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
            if tracked:
                busy[task] = True  # type: ignore[index]
            self.ctx.metrics.inflight.inc()
            try:
                if head.method == "CONNECT":
                    if tunnel is not None or captured is not None:
                        raise BadRequest("CONNECT inside a tunnel")
                    await self._connect_failing_closed(conn, head)
                    return
                keep_alive = await self._request(conn, head, tunnel, captured)
            except BadRequest as exc:
                await self._bad_request(conn, exc, head)
                return
            finally:
                self.ctx.metrics.inflight.dec()
                if tracked:
                    busy[task] = False  # type: ignore[index]
            conn.served += 1
            if not keep_alive:
                return

    async def _bad_request(
        self, conn: ClientConnection, exc: BadRequest, head: RequestHead | None = None
    ) -> None:
        """Answer a request that cannot be served and close; the answer to a HEAD has no body
        (RFC 9110 §9.3.2), `head` being the request when its head was read."""
        log.info("proxy.bad_request", status=exc.status, error=exc.code, reason=str(exc))
        if not conn.tunnel_established or conn.http_in_tunnel:
            await conn.send(
                responses.error(
                    exc.status,
                    exc.code,
                    str(exc),
                    keep_alive=False,
                    head=head is not None and head.method == "HEAD",
                )
            )

    async def _connect_failing_closed(self, conn: ClientConnection, head: RequestHead) -> None:
        """`_connect`, where a bug of ours before the tunnel exists is a 503, never a tunnel.

        Either way the CONNECT gets its decision line (unless it already has one).
        """
        ex = self._connect_exchange(conn, head)
        try:
            await self._connect(conn, ex, head.header(PURPOSE_HEADER))
        except (BadRequest, asyncio.CancelledError, ConnectionError):
            raise
        except Exception:
            log.exception("egress.internal_error", decision_id=ex.decision_id, method="CONNECT")
            if ex.recorded:
                return
            fail_exchange(ex, "internal_error")
            if not conn.tunnel_established:
                ex.status = 503
                with contextlib.suppress(Exception):
                    await conn.send(responses.unavailable(ex.decision_id, keep_alive=False))
            record_exchange(ex, self.ctx.decision_log, mode=self.settings.mode)

    def _tunnel_failed(self, ex: Exchange, exc: Exception) -> None:
        """Record an intercepted tunnel that could not be set up (the app's TLS with us failed)."""
        if isinstance(exc, OSError | TimeoutError):  # ssl.SSLError is an OSError
            log.info("tunnel.tls_failed", host=ex.host, port=ex.port, error=type(exc).__name__)
            fail_exchange(ex, "tls_handshake_failed")
        else:
            log.exception("egress.internal_error", decision_id=ex.decision_id, method="CONNECT")
            fail_exchange(ex, "internal_error")
        record_exchange(ex, self.ctx.decision_log, mode=self.settings.mode)

    # -- one plain (or intercepted) request ------------------------------------------------------

    def _name(
        self, head: RequestHead, tunnel: Tunnel | None, captured: Captured | None = None
    ) -> tuple[str, str | None, int, str]:
        """(scheme, host, port, path) of a request; `BadRequest` when it cannot be named.

        On a captured plain-HTTP connection an origin-form request is named by its Host (host
        None: it has none, the destination is unidentified); absolute-form is read as always.
        """
        # The fields by lower-case name, read directly: `head.header()` lower-cases its argument,
        # and the names asked for here are lower-case already (a call and a string per lookup).
        first = head.first
        upgrade = first.get("upgrade")
        if upgrade is not None and not _ignorable_upgrade(upgrade, head.version):
            raise BadRequest("protocol upgrades are not supported through the proxy")
        try:
            if captured is not None and head.target.startswith("/"):
                host_header = first.get("host")
                if host_header is None:
                    return "http", None, captured.port, head.target
                host, port = parse_authority_cached(host_header, default_port=80)
                return "http", host, port, head.target
            if tunnel is not None:
                scheme, host, port, path = tunnel.scheme, tunnel.host, tunnel.port, head.target
                if not path.startswith("/"):
                    # A server accepts the absolute-form too (RFC 9112 §3.2.2): naming the
                    # tunnel's own origin, and no other.
                    target = _parse_target(path)
                    if (target.scheme, target.host, target.port) != (scheme, host, port):
                        raise BadAuthority(
                            "the request target names another origin than the tunnel"
                        )
                    path = target.path
            else:
                # Absolute-form: the target named and its Host field checked, once per spelling
                # of both (what `_absolute_name` returns depends on nothing else).
                target_text = head.target
                host_required = head.version == "1.1"
                if len(target_text) <= _CACHED_TARGET_MAX:
                    return _absolute_name_cached(target_text, first.get("host"), host_required)
                return _absolute_name(target_text, first.get("host"), host_required)
            _check_host_field(scheme, host, port, first.get("host"), head.version == "1.1")
        except BadAuthority as exc:
            raise BadRequest(str(exc)) from None
        return scheme, host, port, path

    async def _request(
        self,
        conn: ClientConnection,
        head: RequestHead,
        tunnel: Tunnel | None,
        captured: Captured | None = None,
    ) -> bool:
        """Decide and carry out one request; True when the connection may serve another one."""
        scheme, host, port, path = self._name(head, tunnel, captured)
        connected_to = captured.connected_to if captured is not None else None
        if tunnel is not None:
            connected_to = tunnel.connected_to
        entry: Entry = "intercepted" if tunnel is not None else "forward"
        if connected_to is not None:
            entry = "transparent"
        first = head.first  # (lower-case names, as in `_name`)
        expect = first.get("expect")
        if (
            expect is not None
            and expect.lower() == "100-continue"
            and head.version == "1.1"  # never to HTTP/1.0 (RFC 9110 §10.1.1)
            and not conn.body_complete
        ):
            # The body is inspected before anything goes upstream: ask for it ourselves.
            await conn.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        timings = Timings()
        decision_id = new_decision_id()
        keep_alive = head.keep_alive and not self._closing
        version = "1.0" if head.version == "1.0" else "1.1"
        ex: Exchange | None = None
        try:
            limit = self.settings.limits.max_body_bytes
            read = conn.body_here(limit)  # (the usual call came whole: no coroutine)
            body, truncated = read if read is not None else await conn.read_body(limit)
            keep_alive = keep_alive and not truncated
            # The naming facts by position: fifteen keyword arguments at most (see new_exchange).
            ex = new_exchange(
                entry,
                head.method,
                scheme,
                # Unnamed (captured, no Host): the address it connected to stands for the host.
                host if host is not None else connected_to[0],  # type: ignore[index]
                port,
                path,
                connected_to=connected_to,
                unidentified="no_host" if host is None else None,
                raw_headers=head.headers,
                body=body,
                body_truncated=truncated,
                index=self.ctx.index,
                source=conn.source,
                default_purpose=self.settings.default_purpose,
                purpose_header=first.get(PURPOSE_HEADER),
                tunnel_purpose=tunnel.purpose if tunnel is not None else None,
                decision_id=decision_id,
                timings=timings,
            )
            await decide_exchange(
                ex, self.ctx.decider, resolver=self.ctx.resolver, limits=self.settings.limits
            )
            outcome = settle(ex, mode=self.settings.mode)
            if outcome.is_sent:
                keep_alive = await self._forward(conn, head, ex, keep_alive, version)
            else:
                outcome = await commit_refusal(ex, self.ctx.decision_log, mode=self.settings.mode)
                await conn.send(
                    responses.rejection(
                        outcome,
                        ex.decision,  # type: ignore[arg-type]
                        keep_alive=keep_alive and conn.body_complete,
                        head=head.method == "HEAD",
                        version=version,
                    )
                )
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
            if ex is not None and ex.status is not None:
                # The call went out and its answer had begun: its record stays what happened
                # (a 503 written now would land inside that answer); the connection ends.
                return False
            if ex is not None:
                ex.decision = Decision(
                    decision_id=decision_id, action="deny", fault="internal_error"
                )
                ex.outcome, ex.status = Outcome.UNAVAILABLE, 503
            with contextlib.suppress(Exception):
                await conn.send(
                    responses.unavailable(
                        decision_id, keep_alive=False, head=head.method == "HEAD", version=version
                    )
                )
            return False
        finally:
            if ex is not None and ex.decision is not None:
                record_exchange(ex, self.ctx.decision_log, mode=self.settings.mode)

    async def _forward(
        self,
        conn: ClientConnection,
        head: RequestHead,
        ex: Exchange,
        keep_alive: bool,
        version: str,
    ) -> bool:
        """Send an allowed exchange upstream and relay the answer; True to keep the client."""
        assert ex.destination is not None
        data: bytes | AsyncIterator[bytes] | None
        if ex.body_truncated:
            data = _chain(ex.body, conn.body_rest())
        else:
            data = ex.body if (ex.body or head.method in ("POST", "PUT", "PATCH")) else None
        t0 = time.perf_counter()
        try:
            response = await send_request(
                self.ctx.upstream,
                method=ex.method,
                scheme=ex.upstream_scheme,
                destination=ex.destination,
                port=ex.upstream_port,
                path=ex.path,
                headers=ex.headers,
                data=data,
                body_length=_declared_length(head) if ex.body_truncated else None,
            )
            ex.timings.upstream_ms = (time.perf_counter() - t0) * 1000.0
            # The relay writes this head first: from here the app has (part of) its answer,
            # which a fault must not overwrite (see `_request`'s last resort).
            ex.status = response.status
            keep_alive = await relay_response(
                response,
                conn.writer,
                method=ex.method,
                client_version=version,
                keep_alive=keep_alive,
            )
        except UpstreamError as exc:
            ex.status = exc.status
            await conn.send(
                responses.error(
                    exc.status,
                    exc.code,
                    exc.message,
                    decision_id=ex.decision_id,
                    keep_alive=False,
                    head=head.method == "HEAD",
                    version=version,
                )
            )
            return False
        return keep_alive

    # -- CONNECT -------------------------------------------------------------------------------

    def _connect_exchange(self, conn: ClientConnection, head: RequestHead) -> Exchange:
        try:
            host, port = parse_authority_cached(head.target, default_port=443)
        except BadAuthority as exc:
            raise BadRequest(str(exc)) from None
        if conn.upgrade_rest:
            raise BadRequest("data sent before the tunnel was established")
        return new_exchange(
            entry="connect",
            method="CONNECT",
            scheme="https",
            host=host,
            port=port,
            path="",
            raw_headers=[],
            index=self.ctx.index,
            source=conn.source,
            default_purpose=self.settings.default_purpose,
            purpose_header=head.header(PURPOSE_HEADER),
        )

    async def _connect(
        self, conn: ClientConnection, ex: Exchange, purpose_header: str | None
    ) -> None:
        ca = self.ctx.certificate_authority
        if ca is not None and ex.recipient is not None and ex.recipient.inspect_tls:
            # Intercepted: each request inside is an exchange of its own; the CONNECT only
            # has to lead to a checked destination (its line is written only if it fails).
            forbidden = await check_destination(ex, self.ctx.resolver)
            if forbidden is None and ex.destination is not None:
                await self._intercept(conn, ex, Tunnel(ex.host, ex.port, purpose_header), ca)
                return
        await decide_exchange(ex, self.ctx.decider, resolver=self.ctx.resolver)
        outcome = settle(ex, mode=self.settings.mode)
        if not outcome.is_sent:
            outcome = await commit_refusal(ex, self.ctx.decision_log, mode=self.settings.mode)
            await conn.send(
                responses.rejection(outcome, ex.decision, keep_alive=False)  # type: ignore[arg-type]
            )
            record_exchange(ex, self.ctx.decision_log, mode=self.settings.mode)
            return
        await self._splice(conn, ex)

    async def _splice(self, conn: ClientConnection, ex: Exchange, *, announce: bool = True) -> None:
        """Open the tunnel of an allowed call to its checked address and copy bytes both ways.

        `announce`: answer the CONNECT first (a captured connection has no CONNECT to answer:
        its ClientHello, still unread, is the first thing relayed, byte for byte).
        """
        assert ex.destination is not None and ex.decision is not None
        if self.ctx.open_tunnels >= self.settings.max_tunnels:
            ex.status = 503 if announce else None  # a captured connection is just closed
            if announce:
                await conn.send(
                    responses.error(
                        503,
                        responses.TOO_MANY_TUNNELS,
                        "too many open tunnels",
                        decision_id=ex.decision_id,
                        keep_alive=False,
                    )
                )
            record_exchange(ex, self.ctx.decision_log, mode=self.settings.mode)
            return
        t0 = time.perf_counter()
        try:
            up_reader, up_writer = await open_tunnel(
                ex.destination, connect_timeout=self.settings.upstream_connect_timeout
            )
        except UpstreamError as exc:
            ex.status = exc.status if announce else None
            if announce:
                await conn.send(
                    responses.error(
                        exc.status,
                        exc.code,
                        exc.message,
                        decision_id=ex.decision_id,
                        keep_alive=False,
                    )
                )
            record_exchange(ex, self.ctx.decision_log, mode=self.settings.mode)
            return
        ex.timings.upstream_ms = (time.perf_counter() - t0) * 1000.0
        if announce:
            await conn.send(CONNECT_OK)
        conn.tunnel_established = True
        ex.status = 200
        record_exchange(ex, self.ctx.decision_log, mode=self.settings.mode)
        self.ctx.open_tunnels += 1
        self.ctx.metrics.open_tunnels.inc()
        try:
            sent, received = await splice(
                conn, conn.writer, up_reader, up_writer, idle=self.settings.idle_timeout
            )
            log.info(
                "tunnel.closed",
                decision_id=ex.decision.decision_id,
                host=ex.host,
                port=ex.port,
                bytes_out=sent,
                bytes_in=received,
            )
        finally:
            self.ctx.open_tunnels -= 1
            self.ctx.metrics.open_tunnels.dec()

    async def _intercept(
        self, conn: ClientConnection, ex: Exchange, tunnel: Tunnel, ca: CertificateAuthority
    ) -> None:
        """Terminate the client's TLS with a minted leaf, then serve requests inside it.

        An app may send plain HTTP through its CONNECT instead (undici's ProxyAgent tunnels
        http:// URLs too): what it sends first says which, and plain requests are served as
        http:// calls to the tunnel's origin, as a forwarded absolute-form request would be.
        `ex` is the CONNECT's: it gets a decision line only if the tunnel cannot be set up.
        """
        context = await ca.ssl_context_for_async(tunnel.host)
        # The app's first bytes stay in the socket until we know what they are; unless the
        # socket carries our TLS with a gateway client, whose records say nothing of them.
        peek = not conn.over_ssl
        if peek:
            conn.hold_reading()
        await conn.send(CONNECT_OK)
        conn.tunnel_established = True
        ex.status = 200
        try:
            if peek and await _sends_plain_http(conn, self.settings.header_timeout):
                conn.read_http_again()
                tunnel = replace(tunnel, scheme="http")
            else:
                # The parser is fresh before the handshake: asyncio's loop hands the app's first
                # request, which may come with the handshake's end, to the protocol before
                # start_tls returns (it went to the raw bytes after the CONNECT, and was lost).
                conn.reset_parser()
                await conn.writer.start_tls(
                    context, ssl_handshake_timeout=self.settings.header_timeout
                )
        except (OSError, TimeoutError) as exc:
            self._tunnel_failed(ex, exc)  # the CONNECT was answered 200, then TLS failed
            return
        conn.http_in_tunnel = True
        conn.served += 1  # the CONNECT was a request: the tunnel may idle like a kept-alive one
        self.ctx.metrics.inflight.dec()
        self._set_busy(False)
        try:
            await self._serve(conn, tunnel=tunnel)
        finally:
            self.ctx.metrics.inflight.inc()
            self._set_busy(True)


async def _sends_plain_http(conn: ClientConnection, seconds: float) -> bool:
    """Whether the first bytes waiting on `conn` (held unread) begin an HTTP request: a method
    is a token of letters (RFC 9110 §9.1), a TLS record begins with byte 22.

    False when the app closed without sending any, or sent something else (which TLS then
    refuses, as before); TimeoutError when it sends nothing in time.
    """
    from proxy.first_bytes import peek_waiting  # (at first use, as transparent capture's)

    async with asyncio.timeout(seconds):
        first = await peek_waiting(conn.writer.get_extra_info("socket").fileno(), 1)
    return first.isalpha()


def _ignorable_upgrade(upgrade: str, version: str) -> bool:
    """An `Upgrade` the call can go on without: any in HTTP/1.0, or only to HTTP/2 (`h2c`).

    A server may answer as if Upgrade were absent (RFC 9110 §7.8; for h2c RFC 7540 §3.2, which
    RFC 9113 §3.1 deprecates); `curl --http2` asks for h2c on every plain-HTTP call. The field is hop-by-hop: never forwarded.
    Other protocols (WebSocket) would carry what inspection cannot read, so they are refused.
    """
    if version == "1.0":
        return True
    return all(token.strip().lower() in ("h2c", "") for token in upgrade.split(","))


def _declared_length(head: RequestHead) -> int | None:
    """The app's Content-Length (llhttp validated it), unless the body came chunked."""
    if head.header("transfer-encoding") is not None:
        return None
    value = head.header("content-length")
    return int(value) if value is not None and value.isdigit() else None


_parse_url_cached = functools.lru_cache(maxsize=1024)(parse_url)
_CACHED_TARGET_MAX = 256  # longer targets (long query strings) are parsed each time


def _parse_target(target: str) -> Target:
    """`parse_url` of an absolute-form request target, cached: an app calls the same few URLs.

    The cache is bounded in entries and in their size; a malformed target raises each time.
    """
    if len(target) <= _CACHED_TARGET_MAX:
        return _parse_url_cached(target)
    return parse_url(target)


def _absolute_name(
    target: str, host_header: str | None, host_required: bool
) -> tuple[str, str, int, str]:
    """(scheme, host, port, path) of an absolute-form request target.

    The target names the call. Its Host field (`host_header`; None: it has none, refused when
    `host_required`) must be well-formed but need not agree: a proxy ignores it and sends the
    target's own (RFC 9112 §3.2.2). Node's `http.request` with an absolute-form path and no
    Host of the app's sends the proxy's address there.
    """
    scheme, host, port, path = parse_url(target)
    _host_field(host_header, host_required, DEFAULT_PORTS[scheme])
    return scheme, host, port, path


def _check_host_field(
    scheme: str, host: str, port: int, host_header: str | None, host_required: bool
) -> None:
    """`BadAuthority` unless the Host field (None: absent) names the request's origin, or is
    absent where allowed: inside a tunnel, whose origin the CONNECT named, a Host naming another
    would have the upstream serve that one instead (domain fronting)."""
    named = _host_field(host_header, host_required, DEFAULT_PORTS[scheme])
    if named is not None and named != (host, port):
        raise BadAuthority("Host header disagrees with the request target")


def _host_field(
    host_header: str | None, host_required: bool, default_port: int
) -> tuple[str, int] | None:
    """(host, port) of a Host field (None: absent); `BadAuthority` when it is malformed, or
    absent where required (RFC 9112 §3.2)."""
    if host_header is None:
        if host_required:
            raise BadAuthority("HTTP/1.1 request without a Host header")
        return None
    return parse_authority_cached(host_header, default_port=default_port)


# An app calls the same few URLs with the same Host: named once per spelling (bounded like
# `_parse_url_cached`; a refused pair raises each time, lru_cache keeps no errors).
_absolute_name_cached = functools.lru_cache(maxsize=1024)(_absolute_name)


async def _chain(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    if first:
        yield first
    async for chunk in rest:
        yield chunk
