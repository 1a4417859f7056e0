"""The control-plane client against real servers on loopback: aiohttp's, and raw ones for framings."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import orjson
import pytest
import trustme
from aiohttp import web

from proxy.control_client import ControlClient, ControlClientError, ControlHTTPError


class Seen:
    def __init__(self) -> None:
        self.requests: list[web.Request] = []
        self.bodies: list[bytes] = []
        self.peers: set[tuple[str, int]] = set()


async def _serve_app(
    app: web.Application, ssl_context: ssl.SSLContext | None = None
) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


@pytest.fixture
async def registry_like() -> AsyncIterator[tuple[Seen, str]]:
    seen = Seen()

    async def echo(request: web.Request) -> web.StreamResponse:
        seen.requests.append(request)
        seen.bodies.append(await request.read())
        seen.peers.add(request.transport.get_extra_info("peername"))  # type: ignore[union-attr]
        if request.path.endswith("/missing"):
            return web.json_response({"title": "not here"}, status=404)
        if request.path.endswith("/chunked"):
            resp = web.StreamResponse()
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            for part in (b'{"parts": [', b"1, 2, ", b"3]}"):
                await resp.write(part)
            await resp.write_eof()
            return resp
        if request.path.endswith("/slow"):
            await asyncio.sleep(5)
        if request.path.endswith("/gzip"):
            return web.Response(
                body=gzip.compress(b'{"zipped": true}'),
                headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
            )
        return web.json_response(
            {
                "method": request.method,
                "path": request.path,
                "query": dict(request.query),
                "auth": request.headers.get("Authorization"),
                "type": request.headers.get("Content-Type"),
            }
        )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    runner, port = await _serve_app(app)
    yield seen, f"http://127.0.0.1:{port}/base"
    await runner.cleanup()


async def test_json_bodies_bearer_token_and_query_parameters(
    registry_like: tuple[Seen, str],
) -> None:
    seen, url = registry_like
    client = ControlClient(url, token="s3cret")
    try:
        resp = await client.put("/v1/thing", json={"a": [1, 2]}, params={"wait": "30"})
    finally:
        await client.close()
    assert resp.status == 200
    assert resp.json() == {
        "method": "PUT",
        "path": "/base/v1/thing",
        "query": {"wait": "30"},
        "auth": "Bearer s3cret",
        "type": "application/json",
    }
    assert orjson.loads(seen.bodies[0]) == {"a": [1, 2]}


async def test_connections_are_kept_alive_and_reused(registry_like: tuple[Seen, str]) -> None:
    seen, url = registry_like
    client = ControlClient(url)
    try:
        for _ in range(5):
            assert (await client.get("/v1/x")).ok
    finally:
        await client.close()
    assert len(seen.requests) == 5
    assert len(seen.peers) == 1


async def test_concurrent_requests_each_get_their_own_answer(
    registry_like: tuple[Seen, str],
) -> None:
    _, url = registry_like
    client = ControlClient(url)
    try:
        answers = await asyncio.gather(*(client.get(f"/v1/n{i}") for i in range(10)))
    finally:
        await client.close()
    assert [a.json()["path"] for a in answers] == [f"/base/v1/n{i}" for i in range(10)]


async def test_chunked_and_gzip_bodies_are_read_whole(registry_like: tuple[Seen, str]) -> None:
    _, url = registry_like
    client = ControlClient(url)
    try:
        assert (await client.get("/chunked")).json() == {"parts": [1, 2, 3]}
        assert (await client.get("/gzip")).json() == {"zipped": True}
        assert (await client.get("/after")).ok  # the connection still frames correctly
    finally:
        await client.close()


async def test_a_non_2xx_is_returned_and_raise_for_status_names_it(
    registry_like: tuple[Seen, str],
) -> None:
    _, url = registry_like
    client = ControlClient(url)
    try:
        resp = await client.get("/missing")
    finally:
        await client.close()
    assert resp.status == 404
    with pytest.raises(ControlHTTPError) as caught:
        resp.raise_for_status()
    assert caught.value.status == 404
    assert "not here" in caught.value.detail


async def test_the_caller_bounds_a_request_and_the_cut_connection_is_not_reused(
    registry_like: tuple[Seen, str],
) -> None:
    seen, url = registry_like
    client = ControlClient(url)
    try:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await client.get("/slow")
        assert (await client.get("/fast")).json()["path"] == "/base/fast"
    finally:
        await client.close()
    assert len(seen.peers) == 2


async def test_nothing_listening_is_an_oserror() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = ControlClient(f"http://127.0.0.1:{port}")
    with pytest.raises(OSError):
        await client.get("/")
    await client.close()


# ---- raw servers: framings and connection handling aiohttp's server never produces ----

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def raw_server() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    servers: list[asyncio.Server] = []

    async def start(handler: Handler) -> str:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            # A client that hangs up early (a body over its cap) fails the handler's write:
            # the connection is closed whatever the handler got to.
            try:
                with contextlib.suppress(ConnectionError):
                    await handler(reader, writer)
            finally:
                writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"

    yield start
    for server in servers:
        server.close()


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            await reader.readexactly(int(line.split(b":")[1]))
    return head


async def test_a_body_framed_by_the_end_of_the_connection(raw_server) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + b"x" * 100_000)
        await writer.drain()
        writer.close()

    client = ControlClient(await raw_server(handler))
    try:
        assert (await client.get("/")).body == b"x" * 100_000
    finally:
        await client.close()


async def test_an_idle_connection_the_server_closed_is_replaced_once(raw_server) -> None:
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.close()  # keep-alive promised, then dropped while the client holds it idle

    client = ControlClient(await raw_server(handler))
    try:
        assert (await client.get("/")).body == b"ok"
        await asyncio.sleep(0.2)
        assert (await client.post("/", json={"again": True})).body == b"ok"
    finally:
        await client.close()
    assert connections == 2


async def test_a_response_over_the_body_cap_is_an_error(raw_server) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + b"y" * 5000)
        await writer.drain()
        writer.close()

    client = ControlClient(await raw_server(handler), max_body=1000)
    try:
        with pytest.raises(ControlClientError, match="over 1000 bytes"):
            await client.get("/")
    finally:
        await client.close()


async def test_something_that_is_not_http_is_an_error(raw_server) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
        await writer.drain()
        writer.close()

    client = ControlClient(await raw_server(handler))
    try:
        with pytest.raises(ControlClientError, match="not an HTTP"):
            await client.get("/")
    finally:
        await client.close()


# ---- TLS: verified against the CA file given, refused without it ----


@pytest.fixture
async def tls_server(tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_ctx)

    async def hello(request: web.Request) -> web.Response:
        return web.json_response({"tls": request.secure})

    app = web.Application()
    app.router.add_get("/hello", hello)
    runner, port = await _serve_app(app, server_ctx)
    yield f"https://localhost:{port}", ca_file
    await runner.cleanup()


async def test_tls_is_verified_against_the_ca_file(tls_server: tuple[str, Path]) -> None:
    url, ca_file = tls_server
    client = ControlClient(url, ca_file=ca_file)
    try:
        assert (await client.get("/hello")).json() == {"tls": True}
    finally:
        await client.close()


async def test_tls_from_an_unknown_ca_is_refused(tls_server: tuple[str, Path]) -> None:
    url, _ = tls_server
    client = ControlClient(url)
    try:
        with pytest.raises(ssl.SSLCertVerificationError):
            await client.get("/hello")
    finally:
        await client.close()


@pytest.mark.parametrize(
    ("url", "host", "port", "authority", "base_path"),
    [
        ("http://Registry.Example:8080/", "registry.example", 8080, "registry.example:8080", ""),
        ("registry.example", "registry.example", 80, "registry.example", ""),
        (
            "https://user:secret@registry.example/sw/",
            "registry.example",
            443,
            "registry.example",
            "/sw",
        ),
        ("http://[::1]:9000", "::1", 9000, "[::1]:9000", ""),
        ("http://bücher.example", "xn--bcher-kva.example", 80, "xn--bcher-kva.example", ""),
    ],
)
def test_base_url_parsed_by_the_one_url_parser(
    url: str, host: str, port: int, authority: str, base_path: str
) -> None:
    client = ControlClient(url)
    assert (client.host, client.port, client.base_path) == (host, port, base_path)
    assert client._headers["Host"] == authority
    assert "secret" not in repr(client._headers)


@pytest.mark.parametrize("url", ["ftp://registry.example", "http://[::1", "http://host:99999"])
def test_bad_base_url_is_a_value_error(url: str) -> None:
    with pytest.raises(ValueError, match="invalid URL"):
        ControlClient(url)


def test_opa_default_port_when_the_url_names_none() -> None:
    assert ControlClient("http://opa.local", default_port=8181).port == 8181
    assert ControlClient("http://opa.local:9191", default_port=8181).port == 9191
