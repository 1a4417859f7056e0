"""Transparent capture against the explicit proxy: the proxy's CPU per call, same run.

    sudo .venv/bin/python bench/bench_transparent.py [--calls 2000] [--connections 8] [--rounds 3]

Setup (root, `ip`, `iptables`, `setpriv`): the namespaces of the end-to-end tests
(`tests/proxy/netns_harness.py`): a "pod" namespace with `sharewall proxy` running as UID 1337
with `--transparent-listen` and the capture rules applied, and an "internet" namespace with the
HTTP/HTTPS servers, joined by a veth. A load generator runs in the pod as UID 1000 and makes
the same calls two ways, alternating rounds:

- explicit: to the proxy's `--listen` port (absolute-form HTTP; CONNECT for TLS), as an app
  with `HTTP_PROXY`/`HTTPS_PROXY` does;
- transparent: straight to the server's address, redirected by the kernel to
  `--transparent-listen` (original destination, first bytes peeked, name checked against the
  connected address).

Two workloads: `http` (plain HTTP POSTs, inspected and forwarded, keep-alive connections) and
`tls` (one TLS connection per call to a spliced recipient: CONNECT vs. ClientHello SNI). The
proxy's CPU (user+system, from /proc) is read around each round; printed: CPU per call of each
path, and the transparent path's added CPU per call and ratio. Also the time `capture-rules
--apply` took in the pod at start.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import ssl
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "proxy"))

BODY = b'{"ref":"bench-0001","batch":42,"padding":"' + b"x" * 950 + b'"}'


# -- the load generator (runs inside the pod, as the app's UID) -------------------------------


async def _http_worker(mode: str, calls: int, server: str) -> None:
    if mode == "explicit":
        reader, writer = await asyncio.open_connection("127.0.0.1", 15080)
        target = "http://api.vendor.test/bench"
    else:
        reader, writer = await asyncio.open_connection(server, 80)
        target = "/bench"
    request = (
        f"POST {target} HTTP/1.1\r\nHost: api.vendor.test\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(BODY)}\r\n\r\n"
    ).encode() + BODY
    for _ in range(calls):
        writer.write(request)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(head.decode("latin-1"))
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        await reader.readexactly(length)
    writer.close()


async def _tls_worker(mode: str, calls: int, server: str, cafile: str) -> None:
    ctx = ssl.create_default_context(cafile=cafile)
    name = "tunnel.vendor.test"
    for _ in range(calls):
        if mode == "explicit":
            reader, writer = await asyncio.open_connection("127.0.0.1", 15080)
            writer.write(f"CONNECT {name}:443 HTTP/1.1\r\nHost: {name}:443\r\n\r\n".encode())
            await reader.readuntil(b"\r\n\r\n")
            await writer.start_tls(ctx, server_hostname=name)
        else:
            reader, writer = await asyncio.open_connection(
                server, 443, ssl=ctx, server_hostname=name
            )
        writer.write(f"GET /bench HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n".encode())
        await reader.read()
        writer.close()


async def _load(args: argparse.Namespace) -> None:
    per = args.calls // args.connections
    if args.workload == "http":
        jobs = [_http_worker(args.mode, per, args.server) for _ in range(args.connections)]
    else:
        jobs = [
            _tls_worker(args.mode, per, args.server, args.cafile) for _ in range(args.connections)
        ]
    await asyncio.gather(*jobs)


# -- the driver ------------------------------------------------------------------------------


def _micro() -> None:
    """The naming step alone, in process: what a captured connection adds before the pipeline."""
    import ssl as ssl_module
    import timeit

    from proxy.first_bytes import identify

    ctx = ssl_module.create_default_context()
    incoming, outgoing = ssl_module.MemoryBIO(), ssl_module.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname="api.vendor.test")
    with contextlib.suppress(ssl_module.SSLWantReadError):
        tls.do_handshake()
    hello = outgoing.read()
    head = b"POST /bench HTTP/1.1\r\nHost: api.vendor.test\r\nContent-Length: 10\r\n\r\n"
    for what, data in (("ClientHello (SNI)", hello), ("HTTP/1.1 head (Host)", head)):
        n = 20000
        seconds = min(timeit.repeat(lambda d=data: identify(d), number=n, repeat=5))
        print(f"identify {what:<22} {len(data):5d} bytes: {seconds / n * 1e6:6.2f} us")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls per round and path")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--load", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--workload", help=argparse.SUPPRESS)
    parser.add_argument("--server", help=argparse.SUPPRESS)
    parser.add_argument("--cafile", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load:
        asyncio.run(_load(args))
        return 0

    from netns_harness import APP_UID, SERVER_ADDR, missing_requirement, transparent_pod

    _micro()

    why = missing_requirement()
    if why is not None:
        print(f"bench_transparent: skipped: {why}")
        return 0
    # The proxy's decision lines are not what is measured: keep them off the disk's critical path.
    with transparent_pod(("--log-level", "warning")) as pod:
        proxy_pid = pod.procs[-1].pid
        print(f"capture-rules --apply in the pod: {pod.capture_line['apply_ms']:.1f} ms")
        results: dict[tuple[str, str], list[float]] = {}
        for workload in ("http", "tls"):
            calls = args.calls if workload == "http" else max(args.calls // 4, args.connections)
            for round_no in range(args.rounds + 1):
                for mode in ("explicit", "transparent"):
                    command = [
                        "ip", "netns", "exec", pod.pod_ns, "setpriv", f"--reuid={APP_UID}",
                        f"--regid={APP_UID}", "--clear-groups", "--", sys.executable,
                        str(Path(__file__).resolve()), "--load", "--mode", mode,
                        "--workload", workload, "--server", SERVER_ADDR,
                        "--cafile", str(pod.ca_file), "--calls", str(calls),
                        "--connections", str(args.connections),
                    ]  # fmt: skip
                    before = _cpu_seconds(proxy_pid)
                    t0 = time.perf_counter()
                    subprocess.run(command, check=True, env={"PATH": os.environ["PATH"]})
                    wall = time.perf_counter() - t0
                    cpu = _cpu_seconds(proxy_pid) - before
                    if round_no == 0:
                        continue  # warm-up: caches, pools, leaf certificates
                    done = (calls // args.connections) * args.connections
                    results.setdefault((workload, mode), []).append(cpu * 1e6 / done)
                    print(
                        f"  {workload:<4} {mode:<11} round {round_no}: "
                        f"{cpu * 1e6 / done:7.0f} us CPU/call, {done / wall:6.0f} calls/s"
                    )
        print()
        print(f"{'workload':<8} {'explicit':>12} {'transparent':>12} {'added':>10} {'ratio':>7}")
        summary = {}
        for workload in ("http", "tls"):
            explicit = sorted(results[(workload, "explicit")])[
                len(results[(workload, "explicit")]) // 2
            ]
            transparent = sorted(results[(workload, "transparent")])[
                len(results[(workload, "transparent")]) // 2
            ]
            summary[workload] = {
                "explicit_us": round(explicit),
                "transparent_us": round(transparent),
                "added_us": round(transparent - explicit),
                "ratio": round(transparent / explicit, 3),
            }
            print(
                f"{workload:<8} {explicit:9.0f} us {transparent:9.0f} us "
                f"{transparent - explicit:7.0f} us {transparent / explicit:7.3f}"
            )
        print(json.dumps({"apply_ms": pod.capture_line["apply_ms"], **summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
