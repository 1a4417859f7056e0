"""The transparent listener: connections the kernel redirected to us (`sharewall capture-rules`).

For each accepted connection: read where the app really connected (`SO_ORIGINAL_DST`), refuse
one that was aimed at the proxy itself, name the destination from the first bytes without
consuming them (SNI or Host, `proxy.first_bytes`), then hand the untouched connection to the
proxy server, which runs it through the same pipeline as every other call
(`ProxyServer.serve_captured`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from proxy.first_bytes import Identity, peek_identity
from proxy.original_dst import original_destination
from proxy.settings import LISTEN_BACKLOG

if TYPE_CHECKING:
    from proxy.listener import ProxyServer

log = structlog.get_logger("sharewall.proxy")


@dataclass(frozen=True, slots=True)
class Captured:
    """A redirected connection: where the app connected, and what its first bytes name."""

    address: str  # the original destination address (IPv4-mapped IPv6 unmapped)
    port: int
    identity: Identity

    @property
    def connected_to(self) -> tuple[str, int]:
        return self.address, self.port


class TransparentListener:
    """Accepts redirected connections on `address` and serves each through `server`."""

    def __init__(self, server: ProxyServer, address: tuple[str, int]) -> None:
        self.server = server
        self.settings = server.settings
        self._address = address
        self._sock: socket.socket | None = None
        self._accepting: asyncio.Task[None] | None = None
        self._peeking: set[asyncio.Task[None]] = set()

    def bind(self) -> tuple[str, int]:
        """Bind the listening socket; the bound (host, port)."""
        host, port = self._address
        self._sock = socket.create_server(
            (host, port),
            family=socket.AF_INET6 if ":" in host else socket.AF_INET,
            backlog=LISTEN_BACKLOG,
            reuse_port=self.settings.reuse_port,  # the workers of `--workers N`
            dualstack_ipv6=":" in host and socket.has_dualstack_ipv6(),
        )
        self._sock.setblocking(False)
        bound = self._sock.getsockname()
        self._address = (bound[0], bound[1])
        return self._address

    async def start(self) -> None:
        """Start accepting (a task of its own: asyncio's server would read the first bytes)."""
        assert self._sock is not None
        self._accepting = asyncio.create_task(self._accept_loop(self._sock))

    async def close(self) -> None:
        """Stop accepting and drop connections still being named (served ones drain with the server)."""
        if self._accepting is not None:
            self._accepting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._accepting
        # Connections being named or handshaken are cut; served ones drain with the server.
        unserved = [t for t in self._peeking if not self.server.is_serving(t)]
        for task in unserved:
            task.cancel()
        if unserved:
            await asyncio.wait(unserved, timeout=1.0)
        if self._sock is not None:
            self._sock.close()

    async def _accept_loop(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, _peer = await loop.sock_accept(listener)
            except OSError as exc:  # EMFILE and friends: back off instead of spinning
                log.warning("transparent.accept_failed", error=type(exc).__name__)
                await asyncio.sleep(0.1)
                continue
            if len(self._peeking) >= self.settings.max_connections:
                # A connection being named holds a task and a socket until it speaks or times
                # out: captured connections are bounded like the proxy's other ones.
                log.warning("proxy.connection_refused", reason="max_connections")
                sock.close()
                continue
            task = asyncio.create_task(self._on_connection(sock))
            self._peeking.add(task)
            task.add_done_callback(self._peeking.discard)

    async def _on_connection(self, sock: socket.socket) -> None:
        try:
            sock.setblocking(False)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                address, port = original_destination(sock)
            except (OSError, ValueError) as exc:
                # Not redirected by the kernel (someone connected to our port directly).
                log.warning("transparent.refused", reason="no_original_destination", error=str(exc))
                sock.close()
                return
            if self._is_self(address, port):
                log.warning("transparent.refused", reason="proxy_self", port=port)
                sock.close()
                return
            identity = await peek_identity(
                sock,
                seconds=self.settings.first_bytes_timeout,
                limit=self.settings.max_header_bytes,
            )
        except asyncio.CancelledError:
            sock.close()
            raise
        except Exception:
            log.exception("transparent.connection_error")
            sock.close()
            return
        # Handed over: from here the proxy server owns the socket (and closes it).
        try:
            await self.server.serve_captured(sock, Captured(address, port, identity))
        except asyncio.CancelledError:
            sock.close()
            raise
        except Exception:
            # Fails closed: nothing was relayed; the connection is dropped.
            log.exception("transparent.connection_error")
            sock.close()

    def _is_self(self, address: str, port: int) -> bool:
        addr = ipaddress.ip_address(address)
        own_host, own_port = self._address
        if port == own_port and (
            ipaddress.ip_address(own_host) == addr or ipaddress.ip_address(own_host).is_unspecified
        ):
            return True
        return self.server.ctx.resolver.is_self(addr, port)
