"""The upstream side: pooled aiohttp connections to checked addresses, streamed responses, tunnels.

The connector's resolver answers only with the address the destination check approved for
that (host, port), so DNS is resolved once and never again by aiohttp (no rebinding), while
SNI and certificate verification still use the host name.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path

import aiohttp
import structlog
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from proxy import responses
from proxy.destinations import Destination

log = structlog.get_logger("sharewall.proxy.upstream")

# RFC 9110 §7.6.1 hop-by-hop fields, plus what would reveal the pod or the proxy to a vendor,
# plus framing fields aiohttp recomputes for the body it sends.
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
    "host",
    "content-length",
    "expect",
    "via",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
}
_RESPONSE_DROP = HOP_BY_HOP | {"content-length"}
SHAREWALL_PREFIX = "x-sharewall-"
_NO_BODY_STATUSES = frozenset({204, 304})


class UpstreamError(Exception):
    """The upstream could not be reached (502) or did not answer in time (504)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _connection_tokens(headers: Iterable[tuple[str, str]]) -> set[str]:
    """Header names listed in `Connection:` (they are hop-by-hop too)."""
    tokens: set[str] = set()
    for name, value in headers:
        if name.lower() == "connection":
            tokens.update(t.strip().lower() for t in value.split(",") if t.strip())
    return tokens


def filter_request_headers(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Headers to send upstream: no hop-by-hop, nothing revealing the pod, no `X-Sharewall-*`."""
    named = _connection_tokens(headers)
    return [
        (k, v)
        for k, v in headers
        if (lk := k.lower()) not in _REQUEST_DROP
        and lk not in named
        and not lk.startswith(SHAREWALL_PREFIX)
    ]


def filter_response_headers(raw: Iterable[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    """Headers to send the app: no hop-by-hop, no upstream `X-Sharewall-*`."""
    headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in raw]
    named = _connection_tokens(headers)
    return [
        (k, v)
        for k, v in headers
        if (lk := k.lower()) not in _RESPONSE_DROP
        and lk not in named
        and not lk.startswith(SHAREWALL_PREFIX)
    ]


class CheckedAddressResolver(AbstractResolver):
    """An aiohttp resolver that only knows the addresses the destination check approved."""

    def __init__(self) -> None:
        self._checked: dict[tuple[str, int], Destination] = {}

    def remember(self, destination: Destination, port: int) -> None:
        self._checked[(destination.host.lower().rstrip("."), port)] = destination

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        destination = self._checked.get((host.lower().rstrip("."), port))
        if destination is None:
            # Never fall back to DNS: an unchecked name is never connected to.
            raise OSError(f"{host}:{port} was not checked")
        return [
            {
                "hostname": host,
                "host": destination.address,
                "port": port,
                "family": destination.family,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
        ]

    async def close(self) -> None:
        self._checked.clear()


def upstream_ssl_context(ca_file: Path | None) -> ssl.SSLContext:
    """The trust store for upstream TLS: the system's, or only `--upstream-ca` when given."""
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    context.set_alpn_protocols(["http/1.1"])
    return context


class UpstreamPool:
    """One keep-alive pooled aiohttp session for every upstream call of the process."""

    def __init__(
        self,
        *,
        upstream_ca: Path | None = None,
        connect_timeout: float = 5.0,
        head_timeout: float = 60.0,
        read_timeout: float = 60.0,
        limit: int = 0,
    ) -> None:
        self.ssl_context = upstream_ssl_context(upstream_ca)
        self.connect_timeout = connect_timeout
        self.head_timeout = head_timeout
        self.resolver = CheckedAddressResolver()
        self._limit = limit
        self.session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Open the session (inside the running loop)."""
        connector = aiohttp.TCPConnector(
            resolver=self.resolver,
            use_dns_cache=False,
            limit=self._limit,
            ssl=self.ssl_context,
            keepalive_timeout=30.0,
        )
        self.session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(
                total=None,
                connect=self.connect_timeout,
                sock_connect=self.connect_timeout,
                sock_read=None,
            ),
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False,
        )

    async def close(self) -> None:
        """Close pooled connections."""
        if self.session is not None:
            await self.session.close()
            self.session = None


async def stream_response(
    pool: UpstreamPool,
    writer: asyncio.StreamWriter,
    *,
    method: str,
    scheme: str,
    destination: Destination,
    port: int,
    path: str,
    headers: list[tuple[str, str]],
    data: bytes | AsyncIterator[bytes] | None,
    client_version: str,
    keep_alive: bool,
    on_head: Callable[[], None] | None = None,
) -> int:
    """Send one request upstream and stream its response to the client.

    Returns the status sent, negated when the response could not be completed (the client
    connection must then be closed). Raises `UpstreamError` before any byte reached the client.
    """
    assert pool.session is not None
    pool.resolver.remember(destination, port)
    # Built from parts, never joined: a path like "//other.host/" must not change the host.
    path_only, _, query = path.partition("?")
    url = URL.build(
        scheme=scheme,
        host=destination.host,
        port=port,
        path=path_only,
        query_string=query,
        encoded=True,
    )
    try:
        async with asyncio.timeout(pool.head_timeout):
            response = await pool.session.request(
                method,
                url,
                headers=headers,
                data=data,
                allow_redirects=False,
            )
    except TimeoutError:
        raise UpstreamError(
            504, responses.UPSTREAM_TIMEOUT, "the upstream did not answer in time"
        ) from None
    except aiohttp.ConnectionTimeoutError:
        raise UpstreamError(
            504, responses.UPSTREAM_TIMEOUT, "connecting to the upstream timed out"
        ) from None
    except (aiohttp.ClientError, OSError) as exc:
        raise UpstreamError(
            502, responses.UPSTREAM_UNREACHABLE, f"upstream unreachable ({type(exc).__name__})"
        ) from None
    if on_head is not None:
        on_head()
    try:
        return await _relay(response, writer, method, client_version, keep_alive)
    finally:
        response.release()


async def _relay(
    response: aiohttp.ClientResponse,
    writer: asyncio.StreamWriter,
    method: str,
    client_version: str,
    keep_alive: bool,
) -> int:
    status = response.status
    headers = filter_response_headers(response.raw_headers)
    length = response.headers.get("Content-Length")
    chunked_upstream = "chunked" in response.headers.get("Transfer-Encoding", "").lower()
    no_body = method == "HEAD" or status in _NO_BODY_STATUSES or status < 200
    lines = [f"HTTP/{client_version} {status} {response.reason or ''}".rstrip()]
    lines += [f"{k}: {v}" for k, v in headers]
    framing = "none"
    if no_body:
        if length is not None and not chunked_upstream:
            lines.append(f"Content-Length: {length}")
    elif length is not None and not chunked_upstream and length.isdigit():
        lines.append(f"Content-Length: {length}")
        framing = "length"
    elif client_version == "1.1":
        lines.append("Transfer-Encoding: chunked")
        framing = "chunked"
    else:
        framing = "close"  # HTTP/1.0 client: the end of the body is the end of the connection
        keep_alive = False
    lines.append(f"Connection: {'keep-alive' if keep_alive else 'close'}")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    if framing == "none":
        await writer.drain()
        return status
    try:
        async for chunk in response.content.iter_any():
            if framing == "chunked":
                writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            else:
                writer.write(chunk)
            await writer.drain()
        if framing == "chunked":
            writer.write(b"0\r\n\r\n")
        await writer.drain()
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        log.info("upstream.response_cut", status=status, error=type(exc).__name__)
        response.close()
        return -status
    return status if keep_alive else -status


async def open_tunnel(
    destination: Destination, *, connect_timeout: float
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw TCP connection to the checked address of a spliced CONNECT tunnel."""
    try:
        async with asyncio.timeout(connect_timeout):
            return await asyncio.open_connection(destination.address, destination.port)
    except TimeoutError:
        raise UpstreamError(
            504, responses.UPSTREAM_TIMEOUT, "connecting to the upstream timed out"
        ) from None
    except OSError as exc:
        raise UpstreamError(
            502, responses.UPSTREAM_UNREACHABLE, f"upstream unreachable ({type(exc).__name__})"
        ) from None


async def splice(
    client_reader: asyncio.StreamReader,
    client_writer: asyncio.StreamWriter,
    up_reader: asyncio.StreamReader,
    up_writer: asyncio.StreamWriter,
    *,
    idle: float,
) -> tuple[int, int]:
    """Copy bytes both ways until one side closes or both are idle for `idle` seconds."""
    loop = asyncio.get_running_loop()
    last = [loop.time()]
    counts = [0, 0]

    async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, i: int) -> None:
        try:
            while True:
                data = await src.read(65536)
                if not data:
                    break
                last[0] = loop.time()
                counts[i] += len(data)
                dst.write(data)
                await dst.drain()
        except (OSError, ConnectionError):
            pass
        finally:
            with contextlib.suppress(OSError, RuntimeError):
                if dst.can_write_eof():
                    dst.write_eof()

    tasks = [
        asyncio.create_task(pump(client_reader, up_writer, 0)),
        asyncio.create_task(pump(up_reader, client_writer, 1)),
    ]
    try:
        while True:
            done, _ = await asyncio.wait(tasks, timeout=max(0.05, idle / 4))
            if len(done) == 2:
                break
            if loop.time() - last[0] > idle:
                break
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        up_writer.close()
    return counts[0], counts[1]
