"""Instructions per proxied call, counted by callgrind: a figure the machine's load cannot move.

    .venv/bin/python bench/callgrind_proxy.py [--calls 300] [--warmup 200] [--tree DIR ...]

Runs `sharewall proxy --mode report` under `valgrind --tool=callgrind` with instrumentation
off, sends `--warmup` calls, switches instrumentation on (`callgrind_control -i on`), sends
`--calls` calls, switches it off, and divides the instructions counted by the calls. Each
call is `bench_proxy.py`'s: a 1 KB JSON POST carrying a phone number on one keep-alive
connection, absolute-form, purpose `service_delivery`, to a plain-HTTP upstream on loopback
(its own process, not measured): the proxy inspects it, decides it (a would-block: personal
data in cleartext), writes its decision line and spool record, counts it and forwards it.

`--tree DIR` (repeatable) runs the proxy with `PYTHONPATH=DIR` (another checkout of the
code, e.g. `git archive main | tar -x -C /tmp/base`), alternating the trees `--rounds` times:
an A/B in one run. Without it, the current tree. Needs valgrind (skipped otherwise).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from bench_proxy import (  # noqa: E402
    PURPOSE,
    UPSTREAM_HOST,
    payload,
    report_proxy_args,
    start_upstream,
    wait_proxy_ready,
)

_LAUNCH = "import sys; from sharewall.cli import main; sys.argv[0] = 'sharewall'; sys.exit(main())"


def _request(port: int, body: bytes, path: str = "/v1/messages") -> bytes:
    head = (
        f"POST http://{UPSTREAM_HOST}:{port}{path} HTTP/1.1\r\n"
        f"Host: {UPSTREAM_HOST}:{port}\r\n"
        "Content-Type: application/json\r\n"
        f"X-Sharewall-Purpose: {PURPOSE}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _call(sock: socket.socket, request: bytes) -> int:
    sock.sendall(request)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("proxy closed the connection")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))  # type: ignore[union-attr]
    while len(rest) < length:
        rest += sock.recv(65536)
    return int(head.split(b" ", 2)[1])


def _instructions(out_files: list[Path]) -> int:
    total = 0
    for path in out_files:
        # The `totals:` line at the end (the `summary:` at the top is written before the run).
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("totals:"):
                total += int(line.split()[1])
    return total


def measure(tree: Path | None, work: Path, upstream_port: int, args: argparse.Namespace) -> float:
    """Instructions per call of one proxy run (k instructions)."""
    tag = tree.name if tree else "current"
    run = Path(tempfile.mkdtemp(prefix=f"cg-{tag}-", dir=work))
    port_file = run / "ports.json"
    # `-c` puts the working directory first on sys.path: run in the run's directory, with the
    # tree measured on PYTHONPATH (ahead of the venv's editable install of this checkout).
    env = dict(os.environ, PYTHONHASHSEED="0", PYTHONPATH=str(tree or ROOT))
    cmd = [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={run}/callgrind.out.%p",
        sys.executable,
        "-c",
        _LAUNCH,
        *report_proxy_args(run, upstream_port),
        *args.proxy_arg,
    ]
    log = open(run / "proxy.log", "wb")  # noqa: SIM115 - lives with the process
    process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=run)
    try:
        bound = wait_proxy_ready(port_file, args.start_timeout)
        request = _request(upstream_port, payload(args.size))
        with socket.create_connection(("127.0.0.1", bound["listen"][1]), timeout=60) as sock:
            for _ in range(args.warmup):
                _call(sock, request)
            subprocess.run(
                ["callgrind_control", "-i", "on", str(process.pid)], check=True, capture_output=True
            )
            statuses = [_call(sock, request) for _ in range(args.calls)]
            subprocess.run(
                ["callgrind_control", "-i", "off", str(process.pid)],
                check=True,
                capture_output=True,
            )
        if set(statuses) != {200}:
            raise RuntimeError(f"calls answered {sorted(set(statuses))}, not 200")
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
    return _instructions(sorted(run.glob("callgrind.out.*"))) / args.calls / 1000.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--size", type=int, default=1024, help="request body bytes")
    parser.add_argument("--tree", type=Path, action="append", default=[])
    parser.add_argument("--rounds", type=int, default=1, help="runs per tree, alternated")
    parser.add_argument("--start-timeout", type=float, default=300.0)
    parser.add_argument("--proxy-arg", action="append", default=[], help="extra proxy flag")
    args = parser.parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("skip callgrind_proxy: valgrind is not installed (apt-get install -y valgrind)")
        return 0
    work = Path(tempfile.mkdtemp(prefix="sharewall-callgrind-"))
    upstream, ports = start_upstream(work)
    trees: list[Path | None] = list(args.tree) or [None]
    figures: dict[str, list[float]] = {}
    try:
        plain = ports["plain"]
        print(
            f"{args.calls} calls after {args.warmup} warm-up, {args.size} B JSON POST with a "
            f"phone number, report mode, plain upstream; work dir {work}",
            flush=True,
        )
        for round_no in range(args.rounds):
            for tree in trees:
                name = str(tree) if tree else "current tree"
                t0 = time.monotonic()
                k = measure(tree, work, plain, args)
                figures.setdefault(name, []).append(k)
                print(
                    f"  round {round_no + 1} {name}: {k:8.1f} k instructions/call "
                    f"({time.monotonic() - t0:.0f} s)",
                    flush=True,
                )
    finally:
        upstream.send_signal(signal.SIGTERM)
        upstream.wait(timeout=10)
    print()
    base = None
    for name, values in figures.items():
        best = min(values)
        base = base or best
        shown = ", ".join(f"{v:.1f}" for v in values)
        print(f"{name:<40} k instr/call {shown:<30} best/first {best / base:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
