"""Tunnels: a raw TCP connection to a checked address, and bytes copied both ways until done.

Used for a spliced CONNECT (after "200 Connection Established") and, for transparent capture,
for a TLS connection that is not intercepted (its ClientHello replayed first, unchanged, with
`splice(..., replay=...)`). Nothing here reads or changes the bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Protocol

from proxy import responses
from proxy.destinations import Destination
from proxy.upstream import UpstreamError


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


class ByteSource(Protocol):
    """What bytes are read from: a `StreamReader`, or a client connection after its CONNECT."""

    async def read(self, n: int = -1) -> bytes: ...


class ByteSink(Protocol):
    """What bytes are written to: a `StreamWriter`, or a client connection's writer."""

    def write(self, data: bytes) -> None: ...

    async def drain(self) -> None: ...

    def can_write_eof(self) -> bool: ...

    def write_eof(self) -> None: ...


async def splice(
    client_reader: ByteSource,
    client_writer: ByteSink,
    up_reader: asyncio.StreamReader,
    up_writer: asyncio.StreamWriter,
    *,
    idle: float,
    replay: bytes = b"",
) -> tuple[int, int]:
    """Copy bytes both ways until one side closes or both are idle for `idle` seconds.

    `replay`: bytes the client already sent (read while naming the destination), written
    upstream first. Returns (bytes sent upstream, bytes received), `replay` included.
    """
    loop = asyncio.get_running_loop()
    last = [loop.time()]
    counts = [len(replay), 0]
    if replay:
        up_writer.write(replay)

    async def pump(src: ByteSource, dst: ByteSink, i: int) -> None:
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
