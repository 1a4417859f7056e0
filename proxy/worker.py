"""One worker process of `sharewall proxy --workers N` (`python -m proxy.worker`, started by
`proxy.supervisor`).

The supervisor hands the worker a socket (its number in `$SHAREWALL_WORKER_FD`) and sends its
orders on it: the settings, its index and its proxy id. The worker runs the proxy exactly as
`sharewall proxy` does, tells the supervisor where its own admin port is once it serves, and
stops (draining, as on SIGTERM) when the supervisor's end of the socket closes: a worker never
outlives its supervisor.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import socket
import struct
import sys
from typing import Any

import orjson

ENV_FD = "SHAREWALL_WORKER_FD"
_LENGTH = struct.Struct(">I")


def send_orders(channel: socket.socket, orders: dict[str, Any]) -> None:
    """The supervisor's side: the worker's orders, length-prefixed (the settings are a dataclass)."""
    blob = pickle.dumps(orders, protocol=pickle.HIGHEST_PROTOCOL)
    channel.sendall(_LENGTH.pack(len(blob)) + blob)


def _receive_orders(channel: socket.socket) -> dict[str, Any]:
    def exactly(size: int) -> bytes:
        data = bytearray()
        while len(data) < size:
            chunk = channel.recv(size - len(data))
            if not chunk:
                raise EOFError("the supervisor closed the channel")
            data += chunk
        return bytes(data)

    (size,) = _LENGTH.unpack(exactly(_LENGTH.size))
    # Our own parent's bytes, over a socketpair nobody else holds.
    orders = pickle.loads(exactly(size))  # noqa: S301
    assert isinstance(orders, dict)
    return orders


def main() -> int:
    """Entry point of a worker: receive the orders, run the proxy until told to stop."""
    from sharewall.cli import keep_unused_modules_out

    keep_unused_modules_out()
    from proxy.proxy_cli import decision_lines_for, event_loop_factory
    from proxy.settings import SettingsError

    fd = os.environ.pop(ENV_FD, "")
    if not fd.isdigit():
        print("proxy.worker: run by `sharewall proxy --workers N`, not by hand", file=sys.stderr)
        return 2
    channel = socket.socket(fileno=int(fd))
    channel.setblocking(True)
    orders = _receive_orders(channel)
    settings = orders["settings"]
    index: int = orders["index"]
    if index > 0 and settings.registry_url is not None:
        from proxy.shipper import default_proxy_id
        from proxy.spool_leftovers import worker_proxy_id

        # The registry keys ledger rows by proxy id: each worker ships its own counts.
        os.environ["SHAREWALL_PROXY_ID"] = worker_proxy_id(default_proxy_id(), index)

    import structlog

    from sharewall.logs import configure_logging

    # One writer thread per worker, whole lines of at most PIPE_BUF bytes per write: the
    # workers' lines never cut into each other on the stdout pipe they share.
    configure_logging(settings.log_level, writer_thread=settings.log_buffer_bytes)
    structlog.contextvars.bind_contextvars(worker=index)
    lines = decision_lines_for(settings)
    try:
        loop_factory = event_loop_factory(settings.loop)
    except SettingsError as exc:
        print(f"sharewall proxy: {exc}", file=sys.stderr, flush=True)
        return 2
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(_serve(settings, channel, lines))


async def _serve(settings: Any, channel: socket.socket, lines: Any) -> int:
    from proxy.app import ProxyApp, run_proxy

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    channel.setblocking(False)

    def on_channel() -> None:
        try:
            data = channel.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # the supervisor is gone (or stopping us): drain and exit
            loop.remove_reader(channel.fileno())
            stop.set()

    def announce(app: ProxyApp) -> None:
        hello = {"pid": os.getpid(), "admin": app.admin_address}
        try:
            channel.send(orjson.dumps(hello) + b"\n")
        except OSError:
            stop.set()

    loop.add_reader(channel.fileno(), on_channel)
    try:
        return await run_proxy(settings, stop=stop, decision_lines=lines, on_listening=announce)
    finally:
        loop.remove_reader(channel.fileno())
        channel.close()


if __name__ == "__main__":
    sys.exit(main())
