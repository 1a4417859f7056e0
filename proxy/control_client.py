"""The proxy's one HTTP/1.1 client for its control plane: the registry service and an OPA server.

The decision shipper, the registry follower and the OPA engine talk to a few known servers
with small JSON bodies (a snapshot can be a few MB). This client does what they need and no
more, on the upstream client's connections and response parser (`proxy.client_connections`),
so the sidecar does not load an HTTP client library (aiohttp's client stack cost ~11 MB of
RSS and ~0.1 s of start): keep-alive connections to one base
URL, a connect bound (the caller bounds each whole request with `asyncio.timeout`), TLS
verified against the system's store or one CA file, a bearer token, query parameters (a long
poll's `wait`), bodies framed by Content-Length, chunked or the end of the connection.

It is not the data-plane client: calls leaving the pod go through `proxy.upstream`, which
connects only to addresses the destination check approved.
"""

from __future__ import annotations

import asyncio
import math
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson

from proxy.client_connections import KeptAliveConnection, MalformedResponse, client_ssl_context
from proxy.destinations import ascii_name
from sharewall.hosts import BadAuthority, format_authority, parse_service_url

DEFAULT_MAX_BODY = 256 * 1024 * 1024


class ControlClientError(Exception):
    """The server could not be reached or answered something that is not HTTP/1.1."""


class ControlHTTPError(ControlClientError):
    """The server answered with a status the caller does not accept (`raise_for_status`)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status
        self.detail = detail


@dataclass(frozen=True, slots=True)
class ControlResponse:
    """A whole response: status, headers (lower-case names) and the body read to its end."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> Any:
        return orjson.loads(self.body) if self.body else None

    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def raise_for_status(self) -> ControlResponse:
        """Self when 2xx, else `ControlHTTPError` with the start of the body."""
        if not self.ok:
            raise ControlHTTPError(self.status, self.text()[:200])
        return self


class _StaleConnection(Exception):
    """A reused keep-alive connection was closed by the server before it answered."""


class ControlClient:
    """Requests to one server (`base_url`, `http://` or `https://`), over kept-alive connections.

    `token` is sent as `Authorization: Bearer` (`use_token` changes it); `headers` go with every request;
    `default_port` is used when the URL names none (else 80 or 443). Use
    `request()` (or `get`/`post`/`put`) inside `asyncio.timeout()`, then `close()`.
    """

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        ca_file: Path | str | None = None,
        headers: Mapping[str, str] | None = None,
        default_port: int | None = None,
        connect_timeout: float = 5.0,
        max_body: int = DEFAULT_MAX_BODY,
        max_idle: int = 4,
        idle_ttl: float = 30.0,
    ) -> None:
        try:
            target = parse_service_url(
                base_url if "://" in base_url else f"http://{base_url}", default_port=default_port
            )
        except BadAuthority as exc:
            raise ValueError(f"invalid URL {base_url!r}: {exc}") from None
        self.base_url = base_url
        self.host = target.host
        self.port = target.port
        self.base_path = target.path.partition("?")[0].rstrip("/")
        self._ssl = client_ssl_context(ca_file) if target.scheme == "https" else None
        authority = format_authority(target.host, target.port, target.scheme)
        self._headers = {"Host": authority, "User-Agent": "sharewall-proxy"}
        if headers:
            self._headers.update(headers)
        self.use_token(token)
        self.connect_timeout = connect_timeout
        self.max_body = max_body
        self.max_idle = max_idle
        self.idle_ttl = idle_ttl
        self._idle: list[KeptAliveConnection] = []
        self._closed = False

    def use_token(self, token: str | None) -> None:
        """Send `token` as `Authorization: Bearer` from the next request on (None: none)."""
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        else:
            self._headers.pop("Authorization", None)

    async def get(self, path: str, **kwargs: Any) -> ControlResponse:
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, **kwargs: Any) -> ControlResponse:
        return await self.request("POST", path, **kwargs)

    async def put(self, path: str, **kwargs: Any) -> ControlResponse:
        return await self.request("PUT", path, **kwargs)

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> ControlResponse:
        """Send one request and read the whole answer.

        Bound it with `asyncio.timeout()` (a connection cut short is closed, never reused);
        only the connect has its own bound here (`connect_timeout`). A kept-alive connection
        the server closed before answering gets the request once more on a new connection, as
        browsers and aiohttp do: every control-plane request here is idempotent (snapshot
        polls, decision batches keyed by id, OPA data writes and queries). `ControlClientError` (or `OSError`, `ssl.SSLError`) when the
        server cannot be reached or breaks the framing. Any status is returned: use
        `raise_for_status()` to turn a non-2xx into `ControlHTTPError`."""
        if self._closed:
            raise ControlClientError("client closed")
        target = self.base_path + path
        if params:
            target += "?" + urlencode(params)
        fields = dict(self._headers)
        if json is not None:
            body = orjson.dumps(json)
            fields["Content-Type"] = "application/json"
        if headers:
            fields.update(headers)
        if body is not None or method in ("POST", "PUT", "PATCH"):
            fields["Content-Length"] = str(len(body or b""))
        head = f"{method} {target} HTTP/1.1\r\n" + "".join(
            f"{name}: {value}\r\n" for name, value in fields.items()
        )
        message = (head + "\r\n").encode("latin-1") + (body or b"")
        connection = self._take_idle()
        if connection is not None:
            try:
                return await self._exchange(connection, method, message)
            except _StaleConnection:
                pass  # the server closed it while idle: once more on a fresh one
        connection = await self._connect()
        try:
            return await self._exchange(connection, method, message)
        except _StaleConnection:
            raise ControlClientError("server closed the connection without answering") from None

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def _take_idle(self) -> KeptAliveConnection | None:
        now = time.monotonic()
        while self._idle:
            connection = self._idle.pop()
            if connection.is_usable(now, self.idle_ttl):
                return connection
            connection.close()
        return None

    def _release(self, connection: KeptAliveConnection) -> None:
        if self._closed or len(self._idle) >= self.max_idle:
            connection.close()
            return
        connection.idle_since = time.monotonic()
        self._idle.append(connection)

    async def _connect(self) -> KeptAliveConnection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, connection = await loop.create_connection(
                    lambda: KeptAliveConnection(loop),
                    ascii_name(self.host),  # resolved without the idna codec
                    self.port,
                    ssl=self._ssl,
                    server_hostname=self.host if self._ssl is not None else None,
                )
        except TimeoutError:
            raise ControlClientError(
                f"connect to {self.host}:{self.port} timed out ({self.connect_timeout:g} s)"
            ) from None
        return connection

    async def _exchange(
        self, connection: KeptAliveConnection, method: str, message: bytes
    ) -> ControlResponse:
        reusable = False
        try:
            connection.begin(method)
            connection.write(message)
            try:
                await connection.drain()
                await connection.head()
            except (asyncio.IncompleteReadError, ConnectionResetError, BrokenPipeError):
                if connection.received:
                    raise ControlClientError("truncated response head") from None
                raise _StaleConnection from None
            except MalformedResponse as exc:
                raise ControlClientError(f"not an HTTP/1.x response ({exc})") from None
            headers: dict[str, str] = {}
            for raw_name, raw_value in connection.headers:
                key, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
                headers[key] = f"{headers[key]}, {value}" if key in headers else value
            body = await self._read_body(connection)
            if headers.get("content-encoding", "").strip().lower() == "gzip":
                body = _gunzip(body, self.max_body)
            reusable = connection.reusable
            return ControlResponse(connection.status, headers, body)
        finally:
            connection.done()
            if reusable:
                self._release(connection)
            else:
                connection.close()

    async def _read_body(self, connection: KeptAliveConnection) -> bytes:
        """The whole body, however it is framed (the caller's `asyncio.timeout` bounds it)."""
        if connection.length is not None and connection.length > self.max_body:
            raise ControlClientError(f"response body over {self.max_body} bytes")
        chunks: list[bytes] = []
        size = 0
        try:
            while chunk := await connection.read_body(math.inf):
                size += len(chunk)
                if size > self.max_body:
                    raise ControlClientError(f"response body over {self.max_body} bytes")
                chunks.append(chunk)
        except (asyncio.IncompleteReadError, OSError, MalformedResponse):
            raise ControlClientError("truncated response body") from None
        return b"".join(chunks)


def _gunzip(body: bytes, limit: int) -> bytes:
    inflater = zlib.decompressobj(31)
    out = inflater.decompress(body, limit + 1)
    if len(out) > limit or inflater.unconsumed_tail:
        raise ControlClientError(f"response body over {limit} bytes inflated")
    return out
