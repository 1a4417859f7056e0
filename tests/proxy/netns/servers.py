"""The "internet" of the transparent-capture tests, run inside its own network namespace.

For each address given: an HTTP server on :80 and an HTTPS one on :443 (aiohttp, a trustme
leaf for every test name) that record what they receive as JSON lines; a server-speaks-first
TCP service on :25 (an SMTP banner) and a client-speaks-first one on :22 (an SSH banner after
the client's); UDP echo on :53 and :9999. Prints "ready" once everything listens.

    python servers.py --addr 10.77.0.1 --addr 10.77.0.3 --cert leaf.pem --seen seen.jsonl
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import sys

from aiohttp import web


def _app(scheme: str, address: str, seen_path: str) -> web.Application:
    async def handler(request: web.Request) -> web.Response:
        body = await request.read()
        record = {
            "server": address,
            "scheme": scheme,
            "method": request.method,
            "host": request.host,
            "path": request.path_qs,
            "headers": {k.lower(): v for k, v in request.headers.items()},
            "body": body.decode("latin-1"),
        }
        with open(seen_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        return web.json_response({"server": address, "scheme": scheme, "body_len": len(body)})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    return app


class _Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(b"echo:" + data, addr)  # type: ignore[attr-defined]


async def _smtp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"220 mail.internet.test ESMTP\r\n")
    await writer.drain()
    await reader.read(1024)
    writer.close()


async def _ssh(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    data = await reader.read(1024)
    if data:
        writer.write(b"SSH-2.0-InternetTest\r\n")
        await writer.drain()
    writer.close()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--addr", action="append", required=True)
    parser.add_argument("--cert", required=True, help="PEM with the leaf key and chain")
    parser.add_argument("--seen", required=True)
    args = parser.parse_args()
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(args.cert)
    loop = asyncio.get_running_loop()
    for address in args.addr:
        for scheme, port, ctx in (("http", 80, None), ("https", 443, tls)):
            runner = web.AppRunner(_app(scheme, address, args.seen), access_log=None)
            await runner.setup()
            await web.TCPSite(runner, address, port, ssl_context=ctx).start()
        await asyncio.start_server(_smtp, address, 25)
        await asyncio.start_server(_ssh, address, 22)
        for port in (53, 9999):
            await loop.create_datagram_endpoint(_Echo, local_addr=(address, port))
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
