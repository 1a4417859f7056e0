"""Naming a captured connection from its first bytes: HTTP heads, TLS, others; peeked, not read."""

from __future__ import annotations

import asyncio
import socket

import pytest
from test_client_hello import openssl_client_hello, refragment

from proxy.first_bytes import Identity, identify, peek_identity


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(
            b"GET /v1 HTTP/1.1\r\nHost: API.Vendor.test\r\nAccept: */*\r\n\r\n",
            Identity("http", name="api.vendor.test"),
            id="origin-form with Host",
        ),
        pytest.param(
            b"POST /v1 HTTP/1.1\r\nHost: api.vendor.test:8080\r\nContent-Length: 3\r\n\r\nabc",
            Identity("http", name="api.vendor.test", port=8080),
            id="Host with a port",
        ),
        pytest.param(
            b"GET http://api.vendor.test/x HTTP/1.1\r\nHost: other.test\r\n\r\n",
            Identity("http", name="api.vendor.test"),
            id="absolute-form wins over Host",
        ),
        pytest.param(
            b"GET / HTTP/1.1\r\nHost: [2001:db8::1]:81\r\n\r\n",
            Identity("http", name="2001:db8::1", port=81),
            id="IPv6 literal Host",
        ),
        pytest.param(b"GET / HTTP/1.0\r\n\r\n", Identity("http", why="no_host"), id="no Host"),
        pytest.param(
            b"GET / HTTP/1.1\r\nHost: a@b.test\r\n\r\n", Identity("http", why="bad_host"), id="bad"
        ),
        pytest.param(
            b"CONNECT api.vendor.test:443 HTTP/1.1\r\nHost: api.vendor.test:443\r\n\r\n",
            Identity("unknown", why="connect"),
            id="CONNECT",
        ),
        pytest.param(
            b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n", Identity("unknown", why="not_http"), id="SSH"
        ),
        pytest.param(b"EHLO client.test\r\n", Identity("unknown", why="not_http"), id="SMTP"),
        pytest.param(
            b"\x00\x00\x00\x08\x04\xd2\x16\x2f",
            Identity("unknown", why="not_http"),
            id="PostgreSQL SSLRequest",
        ),
    ],
)
def test_identify(data: bytes, expected: Identity) -> None:
    assert identify(data) == expected


def test_incomplete_http_head_needs_more_then_is_unknown_at_eof() -> None:
    data = b"GET /v1 HTTP/1.1\r\nHost: api.vend"
    assert identify(data) is None
    assert identify(data, eof=True) == Identity("unknown", why="truncated_http")
    assert identify(data + b"or.test\r\n\r\n") == Identity("http", name="api.vendor.test")


def test_head_larger_than_the_limit_is_unknown() -> None:
    data = b"GET / HTTP/1.1\r\nX-Pad: " + b"a" * 5000
    assert identify(data, limit=4096) == Identity("unknown", why="truncated_http")


# -- peeking on a real TCP connection --------------------------------------------------------


async def _accepted_pair() -> tuple[socket.socket, socket.socket]:
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    listener.close()
    server.setblocking(False)
    return client, server


async def test_peek_names_a_hello_sent_in_pieces_and_consumes_nothing() -> None:
    hello = refragment(openssl_client_hello("api.vendor.test"), 200)
    client, server = await _accepted_pair()
    try:

        async def send_slowly() -> None:
            for start in range(0, len(hello), 150):
                client.sendall(hello[start : start + 150])
                await asyncio.sleep(0.02)

        sender = asyncio.create_task(send_slowly())
        identity = await peek_identity(server, seconds=10, limit=32 * 1024)
        await sender
        assert identity == Identity("tls", name="api.vendor.test")
        server.setblocking(True)
        received = b""
        while len(received) < len(hello):
            received += server.recv(65536)
        assert received == hello  # still all there for the splice or the handshake
    finally:
        client.close()
        server.close()


async def test_peek_of_a_silent_client_times_out_unknown() -> None:
    # A server-speaks-first protocol (SMTP, many databases): the client waits for a banner.
    client, server = await _accepted_pair()
    try:
        identity = await peek_identity(server, seconds=0.2, limit=4096)
        assert identity == Identity("unknown", why="timeout")
    finally:
        client.close()
        server.close()


async def test_peek_of_a_client_that_closes_early_is_unknown() -> None:
    client, server = await _accepted_pair()
    try:
        client.sendall(b"GET / HTTP/1.1\r\nHo")
        client.shutdown(socket.SHUT_WR)
        identity = await peek_identity(server, seconds=10, limit=4096)
        assert identity == Identity("unknown", why="truncated_http")
    finally:
        client.close()
        server.close()


async def test_peek_names_an_http_request() -> None:
    client, server = await _accepted_pair()
    try:
        request = b"GET /x HTTP/1.1\r\nHost: api.vendor.test\r\n\r\n"
        client.sendall(request)
        identity = await peek_identity(server, seconds=10, limit=4096)
        assert identity == Identity("http", name="api.vendor.test")
        server.setblocking(True)
        assert server.recv(4096) == request
    finally:
        client.close()
        server.close()
