"""The upstream pool: idle connections the upstream dropped are swept, live ones are reused."""

from __future__ import annotations

import asyncio
import socket

from proxy.destinations import Destination
from proxy.upstream import UpstreamPool


async def _server(close_after_accept: bool):
    async def on_client(reader, writer):
        if close_after_accept:
            writer.close()
            return
        await reader.read()  # hold the connection until the client goes

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
