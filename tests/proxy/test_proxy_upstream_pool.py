"""The upstream pool: idle connections the upstream dropped are swept, live ones are reused."""

from __future__ import annotations

import asyncio
import socket
import ssl

import pytest
import trustme

from proxy.destinations import Destination
from proxy.upstream import UpstreamError, UpstreamPool


async def _server(close_after_accept: bool):
    async def on_client(reader, writer):
        if close_after_accept:
            writer.close()
            return
        await reader.read()  # hold the connection until the client goes
        writer.close()

    server = await asyncio.start_server(on_client, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def _key(port: int):
    d = Destination("up.test", port, "127.0.0.1", socket.AF_INET, pinned=True)
    return ("http", d.host, d.address, port)


async def test_idle_connections_dropped_by_the_upstream_are_swept():
    server, port = await _server(close_after_accept=True)
    pool = UpstreamPool(idle_ttl=3.0)  # sweeps every second
    await pool.start()
    try:
        conn = await pool.connect(_key(port))
        pool.release(conn, reusable=True)
        assert pool.idle_connections == 1
        await asyncio.sleep(1.5)
        assert pool.idle_connections == 0
    finally:
        await pool.close()
        server.close()


async def test_a_live_idle_connection_is_reused():
    server, port = await _server(close_after_accept=False)
    pool = UpstreamPool(idle_ttl=30.0)
    await pool.start()
    try:
        conn = await pool.connect(_key(port))
        pool.release(conn, reusable=True)
        assert pool._take_idle(_key(port)) is conn
    finally:
        conn.close()
        await pool.close()
        server.close()


async def _tls_server(tmp_path):
    ca = trustme.CA()
    ca_file = tmp_path / "upstream-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("up.test").configure_cert(context)

    async def on_client(reader, writer):
        await reader.read()
        writer.close()

    server = await asyncio.start_server(on_client, "127.0.0.1", 0, ssl=context)
    return server, server.sockets[0].getsockname()[1], ca_file


async def test_tls_upstreams_are_verified_by_the_system_store_read_on_first_use(tmp_path):
    server, port, ca_file = await _tls_server(tmp_path)
    key = ("https", "up.test", "127.0.0.1", port)
    pool = UpstreamPool()  # the system's trust store: it does not know this upstream's CA
    trusting = UpstreamPool(upstream_ca=ca_file)
    try:
        # Concurrent first connections: one store load, each refused as unverified.
        results = await asyncio.gather(
            *(pool.connect(key) for _ in range(3)), return_exceptions=True
        )
        assert all(isinstance(r, UpstreamError) and r.status == 502 for r in results)
        assert all("TLS" in r.message for r in results)
        with pytest.raises(UpstreamError):
            await pool.connect(key)
        conn = await trusting.connect(key)
        conn.close()
    finally:
        await pool.close()
        await trusting.close()
        server.close()
