"""A gzip bomb sent to the registry without a token: time to answer it, and what it costs a
concurrent `GET /healthz`, with aiohttp inflating bodies as they arrive (the registry before)
against bodies inflated only by the route after authentication (the registry now).

    .venv/bin/python bench/bench_registry_bodies.py [--mib 1] [--rounds 5]

Both servers are the real registry app (`create_app`) on loopback in this process, the first
with `auto_decompress` switched back on; figures are medians over the rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import zlib
from pathlib import Path

import aiohttp
from aiohttp import web

from registry import db
from registry.api.app import create_app
from registry.api.server import RegistryRunner
from registry.settings import Settings


def bomb(compressed_mib: float) -> bytes:
    """About `compressed_mib` MiB of gzip inflating ~1000x (zeros)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = bytes(1024 * 1024)
    parts, size = [], 0
    while size < compressed_mib * 1024 * 1024:
        part = packer.compress(block)
        parts.append(part)
        size += len(part)
    return b"".join(parts) + packer.flush()


async def serve(settings: Settings, inflate_early: bool) -> tuple[RegistryRunner, str]:
    app = create_app(settings)
    if inflate_early:
        app._handler_args = {"auto_decompress": True}
    runner = RegistryRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}"


async def one_round(url: str, body: bytes) -> tuple[float, float, int]:
    async with aiohttp.ClientSession() as http:

        async def probe() -> float:
            await asyncio.sleep(0.01)  # while the bomb is arriving
            started = time.perf_counter()
            async with http.get(url + "/healthz") as resp:
                await resp.read()
            return time.perf_counter() - started

        async def send() -> tuple[float, int]:
            started = time.perf_counter()
            async with http.post(
                url + "/healthz", data=body, headers={"Content-Encoding": "gzip"}
            ) as resp:
                await resp.read()
                return time.perf_counter() - started, resp.status

        (answer, status), health = await asyncio.gather(send(), probe())
    return answer, health, status


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    body = bomb(args.mib)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'bench.sqlite'}"
        await db.run_migrations(url)
        settings = Settings(db_url=url)
        print(f"gzip body: {len(body) / 1024:.0f} KiB compressed, POST /healthz without a token")
        print(f"{'server':<34} {'answer ms':>10} {'healthz ms':>11} status")
        for label, early in (
            ("aiohttp inflates on arrival", True),
            ("inflate after auth (now)", False),
        ):
            runner, base = await serve(settings, early)
            try:
                rounds = [await one_round(base, body) for _ in range(args.rounds)]
            finally:
                await runner.cleanup()
            answer = statistics.median(r[0] for r in rounds) * 1000
            health = statistics.median(r[1] for r in rounds) * 1000
            print(f"{label:<34} {answer:>10.1f} {health:>11.1f} {rounds[0][2]}")


if __name__ == "__main__":
    asyncio.run(main())
