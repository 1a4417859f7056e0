"""Proxy benchmark: the same load direct, through Smokescreen, tinyproxy, mitmproxy and sharewall.

    .venv/bin/python bench/bench_proxy.py [--duration 10] [--connections 16] [--threads 2]

Load: `wrk` with a Lua script sending a 1 KB JSON POST that carries a phone number, keep-alive,
fixed concurrency and duration, in absolute form to each proxy. The upstream is a minimal
asyncio HTTP/1.1 server (plain and TLS ports) in its own process. Prints requests/s and p50/p99
latency for each contender, the proxy process's CPU time per call (user + system over the
load), the ratios the issue asks for, the p50 latency each proxy adds, the p99 each adds at a
paced 1,000 requests/s, and memory: RSS per idle keep-alive connection and per in-flight 1 MB
request.

sharewall runs twice: `enforce` as in production (the recipient has `tls_origination`, so the
proxy inspects, decides, logs and forwards over TLS to the upstream's TLS port), and `report`
on the plain port (the same inspection and decision, plain forwarding: like for like with the
other proxies, which forward plain HTTP). Missing tools are skipped with the reason. Nothing is
installed by this script; see bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

UPSTREAM_HOST = "upstream.bench"  # the registered recipient's name; sharewall pins it
PURPOSE = "service_delivery"
RESPONSE_BODY = b'{"sid":"SM0123456789abcdef","status":"queued"}'
SLOW_PATH = "/slow"  # the upstream holds these requests (in-flight memory measurement)
MITM_VENV = Path(os.environ.get("MITM_VENV", "/tmp/mitm-venv"))
# Row names: enforce is allowed and originates TLS upstream (the other proxies forward plain
# HTTP); report sends the same request plain, which enforce would block (cleartext).
ENFORCE = "sharewall enforce+TLS"
REPORT = "sharewall report"
NAME_WIDTH = 22

BENCH_REGISTRY = """\
recipients:
  - id: bench-upstream
    name: Benchmark upstream
    kind: ott_provider
    status: approved
    regions: [SG]
    hosts: ["upstream.bench"]
    tls_origination: {tls_origination}
    grants:
      - purpose: service_delivery
        categories: [contact.phone_number, contact.name, comms.content]
        legal_basis: contract
"""


def proxy_args(
    registry: Path, port_file: Path, spool: Path, mode: str, *, source: Sequence[str] | None = None
) -> list[str]:
    """`sharewall proxy`'s arguments common to the benches: `mode` on `registry` (or on
    `source`, e.g. `--registry-url URL`), any free ports (written to `port_file`), the bench's
    purpose by default."""
    return [
        "proxy",
        *(source if source is not None else ("--registry-file", str(registry))),
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--port-file",
        str(port_file),
        "--mode",
        mode,
        "--default-purpose",
        PURPOSE,
        "--spool-dir",
        str(spool),
    ]


def report_proxy_args(run: Path, upstream_port: int) -> list[str]:
    """`sharewall proxy`'s arguments as the instruction and per-thread benches run it: report
    mode on the bench registry, the plain upstream pinned, its ports written to
    `run/ports.json` and its spool in `run`."""
    registry = run / "registry.yaml"
    registry.write_text(BENCH_REGISTRY.format(tls_origination="false"))
    return [
        *proxy_args(registry, run / "ports.json", run / "spool", "report"),
        "--resolve",
        f"{UPSTREAM_HOST}:{upstream_port}:127.0.0.1",
    ]


def start_upstream(work: Path, hold: float | None = None) -> tuple[subprocess.Popen, dict]:
    """The bench's upstream in its own process (certificates under `work/certs`), once it
    listens: the process and its ports (`plain`, `tls`)."""
    up_ports = work / "upstream.ports"
    (work / "certs").mkdir(exist_ok=True)
    hold_args = ["--hold", str(hold)] if hold is not None else []
    upstream = subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).resolve()),
            "--serve-upstream",
            str(up_ports),
            "--cert-dir",
            str(work / "certs"),
            *hold_args,
        ]
    )
    try:
        wait_for(up_ports.exists, 30, "upstream")
    except Exception:
        upstream.kill()
        raise
    return upstream, json.loads(up_ports.read_text())


def wait_proxy_ready(port_file: Path, timeout: float) -> dict:
    """Wait for a starting proxy's port file, then for its `/readyz` 200; its bound ports."""
    wait_for(port_file.exists, timeout, "proxy port file")
    bound = json.loads(port_file.read_text())
    admin = bound["admin"][1]
    wait_for(
        lambda: urllib.request.urlopen(f"http://127.0.0.1:{admin}/readyz", timeout=5).status == 200,
        timeout,
        "proxy /readyz",
    )
    return bound


def payload(size: int = 1024) -> bytes:
    """A JSON message-send body of exactly `size` bytes carrying one E.164 phone number."""
    body = {
        "To": "+6591234567",
        "From": "QWIQI",
        "Body": "Your QWIQI verification code is 482913. It expires in 10 minutes.",
        "StatusCallback": "https://hooks.qwiqi.example/sms/status",
        "Tags": ["otp", "sg"],
        "Padding": "",
    }
    blank = len(json.dumps(body, separators=(",", ":")).encode())
    body["Padding"] = "x" * max(0, size - blank)
    return json.dumps(body, separators=(",", ":")).encode()


# ---------------------------------------------------------------------------------------------
# Upstream: a tiny HTTP/1.1 server (its own process, so the bench harness does not slow it).


class _UpstreamProtocol(asyncio.Protocol):
    def __init__(self, slow_seconds: float) -> None:
        self.buffer = bytearray()
        self.slow_seconds = slow_seconds
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).decode("latin-1")
            lines = head.split("\r\n")
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip().lower()
            start = end + 4
            if "chunked" in headers.get("transfer-encoding", ""):
                consumed = _chunked_length(self.buffer, start)
                if consumed is None:
                    return
                total = consumed
            else:
                total = start + int(headers.get("content-length", "0"))
                if len(self.buffer) < total:
                    return
            del self.buffer[:total]
            parts = lines[0].split(" ")
            close = headers.get("connection") == "close" or parts[-1] == "HTTP/1.0"
            target = parts[1] if len(parts) > 1 else "/"
            response = (
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                + str(len(RESPONSE_BODY)).encode()
                + (b"\r\nConnection: close" if close else b"")
                + b"\r\n\r\n"
                + RESPONSE_BODY
            )
            if SLOW_PATH in target:
                asyncio.get_running_loop().call_later(
                    self.slow_seconds, self._send, response, close
                )
            else:
                self._send(response, close)

    def _send(self, response: bytes, close: bool) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.transport.write(response)
        if close:
            self.transport.close()


def _chunked_length(buffer: bytearray, start: int) -> int | None:
    """End offset of a complete chunked body starting at `start`, None when incomplete."""
    pos = start
    while True:
        line_end = buffer.find(b"\r\n", pos)
        if line_end < 0:
            return None
        size = int(bytes(buffer[pos:line_end]).split(b";")[0], 16)
        pos = line_end + 2
        if size == 0:
            trailer_end = buffer.find(b"\r\n\r\n", pos - 2)
            return None if trailer_end < 0 else trailer_end + 4
        pos += size + 2
        if pos > len(buffer):
            return None


async def _serve_upstream(port_file: Path, cert_dir: Path, slow_seconds: float) -> None:
    from proxy.certs import CertificateAuthority, generate_ca
    from sharewall.logs import configure_logging

    configure_logging("warning")

    generate_ca(cert_dir / "ca.pem", cert_dir / "ca.key", "sharewall bench CA")
    ca = CertificateAuthority.load(cert_dir / "ca.pem", cert_dir / "ca.key")
    loop = asyncio.get_running_loop()
    plain = await loop.create_server(lambda: _UpstreamProtocol(slow_seconds), "127.0.0.1", 0)
    tls = await loop.create_server(
        lambda: _UpstreamProtocol(slow_seconds),
        "127.0.0.1",
        0,
        ssl=ca.ssl_context_for(UPSTREAM_HOST),
    )
    ports = {"plain": plain.sockets[0].getsockname()[1], "tls": tls.sockets[0].getsockname()[1]}
    tmp = port_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(ports))
    tmp.replace(port_file)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()


# ---------------------------------------------------------------------------------------------
# Processes and measurements.


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if predicate():
                return
        time.sleep(0.1)
    raise RuntimeError(f"timed out waiting for {what}")


def port_open(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True


def _tree(pid: int) -> list[int]:
    """A process and all its descendants."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{current}/task").iterdir():
                todo.extend(int(c) for c in (task / "children").read_text().split())
    return found


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process tree so far (live processes only)."""
    ticks = 0
    for current in _tree(pid):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def tree_rss_kib(pid: int) -> int:
    """Resident memory of a process and all its descendants, in KiB."""
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            for task in Path(f"/proc/{current}/task").iterdir():
                children = (task / "children").read_text().split()
                todo.extend(int(c) for c in children)
    return total


@dataclass
class Contender:
    name: str
    proxy_port: int | None  # None: direct to the upstream
    target_url: str  # absolute URL the app asks for (path only when direct)
    host_header: str
    process: subprocess.Popen | None = None
    notes: list[str] = field(default_factory=list)
    log_file: Path | None = None  # sharewall's JSON log (decision lines)
    # The upstream's plain port for the direct load paired with this one, when the contender's
    # target is its TLS port (enforce+TLS): a plain client cannot pace against a TLS port.
    direct_port: int | None = None


@dataclass
class Result:
    name: str
    rps: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    errors: str = ""
    p50_c1_ms: float | None = None  # p50 with one connection: latency without queueing
    paced_p50_ms: float | None = None  # at a paced rate (`--rate`), round trip
    paced_p99_ms: float | None = None
    # The direct load's p99 in the same run as this contender's (`paired_load`).
    paced_direct_p99_ms: float | None = None
    paced_note: str = ""
    cpu_us: float | None = None  # proxy CPU time per request under load (whole process tree)
    requests: int = 0
    idle_kib: float | None = None
    idle_note: str = ""
    inflight_kib: float | None = None
    inflight_note: str = ""
    decisions: str = ""
    skipped: str = ""


def wrk_script(contender: Contender, body: bytes) -> str:
    return "\n".join(
        [
            'wrk.method = "POST"',
            f'wrk.path = "{contender.target_url}"',
            f'wrk.headers["Host"] = "{contender.host_header}"',
            'wrk.headers["Content-Type"] = "application/json"',
            f'wrk.headers["X-Sharewall-Purpose"] = "{PURPOSE}"',
            f"wrk.body = [[{body.decode()}]]",
            "",
        ]
    )


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _to_ms(text: str) -> float:
    number, unit = re.match(r"([\d.]+)(\w+)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS_MS[unit]


def run_wrk(
    contender: Contender, script: Path, *, threads: int, connections: int, duration: float
) -> Result:
    port = contender.proxy_port or int(contender.host_header.rsplit(":", 1)[1])
    cmd = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",  # wrk takes whole seconds only
        "--latency",
        "-s",
        str(script),
        f"http://127.0.0.1:{port}",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    result = Result(contender.name)
    result.rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    result.requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    result.p50_ms = _to_ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    result.p99_ms = _to_ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    errors = []
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        errors.append(f"{m.group(1)} non-2xx")
    if m := re.search(r"Socket errors: (.*)", out):
        errors.append(f"socket errors: {m.group(1)}")
    result.errors = "; ".join(errors)
    return result


def decision_tally(log_file: Path) -> str:
    """`egress.decision` lines of a sharewall log counted by action (and would-block)."""
    counts: dict[str, int] = {}
    with contextlib.suppress(OSError), open(log_file, "rb") as lines:
        for line in lines:
            if b'"egress.decision"' not in line:
                continue
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                key = record.get("action", "?") + (
                    " would_block" if record.get("would_block") else ""
                )
                counts[key] = counts.get(key, 0) + 1
    return "decisions: " + (", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "none")


def _request_bytes(contender: Contender, body: bytes, path_suffix: str = "") -> bytes:
    head = (
        f"POST {contender.target_url}{path_suffix} HTTP/1.1\r\n"
        f"Host: {contender.host_header}\r\n"
        "Content-Type: application/json\r\n"
        f"X-Sharewall-Purpose: {PURPOSE}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _read_response(sock: socket.socket) -> int:
    """Read one response with a Content-Length body; return its status code."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the response head")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))  # type: ignore[union-attr]
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return status


def _still_open(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        sock.setblocking(True)


def measure_idle(contender: Contender, body: bytes, count: int) -> tuple[float, str]:
    """RSS growth per idle keep-alive client connection (each made one request, then idles)."""
    assert contender.process is not None
    time.sleep(1.0)
    before = tree_rss_kib(contender.process.pid)
    sockets = []
    try:
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", contender.proxy_port), timeout=10)
            sock.sendall(_request_bytes(contender, body))
            _read_response(sock)
            sockets.append(sock)
        time.sleep(1.0)
        after = tree_rss_kib(contender.process.pid)
        kept = sum(_still_open(s) for s in sockets)
    finally:
        for sock in sockets:
            sock.close()
    note = f"{kept}/{count} kept open by the proxy"
    return (after - before) / max(kept, 1), note


def measure_inflight(
    contender: Contender, count: int, hold_seconds: float, size: int = 1 << 20
) -> tuple[float, str]:
    """RSS growth per 1 MB request the upstream holds (bodies fully sent, response pending)."""
    assert contender.process is not None
    body = payload(size)
    time.sleep(1.0)
    before = tree_rss_kib(contender.process.pid)
    sent = threading.Barrier(count + 1)
    statuses: list[int | str] = []

    def one() -> None:
        try:
            with socket.create_connection(("127.0.0.1", contender.proxy_port), timeout=30) as s:
                s.sendall(_request_bytes(contender, body, SLOW_PATH))
                sent.wait()
                statuses.append(_read_response(s))
        except Exception as exc:
            with contextlib.suppress(threading.BrokenBarrierError):
                sent.wait()
            statuses.append(type(exc).__name__)

    threads = [threading.Thread(target=one) for _ in range(count)]
    for t in threads:
        t.start()
    sent.wait()
    time.sleep(min(1.0, hold_seconds / 2))  # bodies are on their way upstream; none answered
    peak = tree_rss_kib(contender.process.pid)
    for t in threads:
        t.join()
    ok = sum(1 for s in statuses if s == 200)
    return (peak - before) / count, f"{ok}/{count} answered 200"


def paced(result: Result, contender: Contender, args: argparse.Namespace) -> None:
    """p50/p99 round trip at a steady `--rate` (bench_footprint's paced load, same request).

    Through a proxy, the same load also goes straight to the upstream at once
    (`bench_footprint.paired_load`): the p99 added is the difference within that one run.
    """
    from bench_footprint import paced_load, paired_load  # it imports this module: not at the top

    host, _, target_port = contender.host_header.rpartition(":")
    kw = {"rate": args.rate, "duration": args.rate_duration, "connections": args.connections}
    direct: list[float] = []
    try:
        if contender.proxy_port:
            (ok, failed, latencies), (_, _, direct) = asyncio.run(
                paired_load(
                    contender.proxy_port,
                    int(target_port),
                    host=host,
                    direct_port=contender.direct_port,
                    **kw,
                )
            )
        else:
            ok, failed, latencies = asyncio.run(
                paced_load(int(target_port), int(target_port), host=host, **kw)
            )
    except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
        # tinyproxy closes every client connection after its answer: no keep-alive to pace.
        result.paced_note = f"paced run failed ({type(exc).__name__})"
        return
    if not latencies:
        result.paced_note = "paced run: no answer"
        return
    latencies.sort()
    result.paced_p50_ms = latencies[len(latencies) // 2] * 1e3
    result.paced_p99_ms = latencies[int(len(latencies) * 0.99)] * 1e3
    if direct:
        direct.sort()
        result.paced_direct_p99_ms = direct[int(len(direct) * 0.99)] * 1e3
    if failed:
        result.paced_note = f"paced: {failed} of {ok + failed} not 200"


# ---------------------------------------------------------------------------------------------
# Contenders.


def start_smokescreen(work: Path, upstream_port: int) -> Contender | str:
    """Stripe's Smokescreen (Go): an egress proxy that checks destinations, inspects nothing."""
    exe = shutil.which("smokescreen")
    if exe is None:
        return "smokescreen not on PATH (go install github.com/stripe/smokescreen@latest)"
    port = free_port()
    # Smokescreen refuses private and loopback addresses unless allowed: the upstream is local.
    process = subprocess.Popen(
        [
            exe,
            "--listen-ip",
            "127.0.0.1",
            "--listen-port",
            str(port),
            "--allow-range",
            "127.0.0.0/8",
            "--allow-address",
            f"127.0.0.1:{upstream_port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(work / "smokescreen.log", "wb"),  # noqa: SIM115 - lives with the process
    )
    try:
        wait_for(lambda: port_open(port), 10, "smokescreen")
    except RuntimeError:
        process.kill()
        tail = (work / "smokescreen.log").read_text(errors="replace")[-400:]
        return f"smokescreen did not start: {tail}"
    return Contender(
        "smokescreen",
        port,
        f"http://127.0.0.1:{upstream_port}/v1/messages",
        f"127.0.0.1:{upstream_port}",
        process,
    )


def start_tinyproxy(work: Path, upstream_port: int) -> Contender | str:
    exe = shutil.which("tinyproxy")
    if exe is None:
        return "tinyproxy not installed (apt-get install -y tinyproxy)"
    port = free_port()
    conf = work / "tinyproxy.conf"
    conf.write_text(
        f"Port {port}\nListen 127.0.0.1\nTimeout 60\nMaxClients 2048\nLogLevel Critical\n"
        f'PidFile "{work / "tinyproxy.pid"}"\nDisableViaHeader Yes\n'
    )
    process = subprocess.Popen(
        [exe, "-d", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    wait_for(lambda: port_open(port), 10, "tinyproxy")
    return Contender(
        "tinyproxy",
        port,
        f"http://127.0.0.1:{upstream_port}/v1/messages",
        f"127.0.0.1:{upstream_port}",
        process,
    )


def start_mitmproxy(work: Path, upstream_port: int) -> Contender | str:
    exe = shutil.which("mitmdump") or str(MITM_VENV / "bin" / "mitmdump")
    if not Path(exe).exists():
        return f"mitmdump not found on PATH or in {MITM_VENV} (see bench/README.md)"
    port = free_port()
    process = subprocess.Popen(
        [
            exe,
            "-q",
            "--listen-host",
            "127.0.0.1",
            "--listen-port",
            str(port),
            "--set",
            f"confdir={work / 'mitm'}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for(lambda: port_open(port), 30, "mitmdump")
    return Contender(
        "mitmproxy",
        port,
        f"http://127.0.0.1:{upstream_port}/v1/messages",
        f"127.0.0.1:{upstream_port}",
        process,
    )


def start_sharewall(
    work: Path, ports: dict[str, int], cert_dir: Path, *, mode: str, upstream_port: int
) -> Contender | str:
    exe = Path(sys.executable).with_name("sharewall")
    if not exe.exists():
        return f"{exe} not found (make install: pip install -e .)"
    # enforce: TLS origination to the TLS port (allowed); report: plain (would-block, cleartext).
    registry = work / f"bench-registry-{mode}.yaml"
    registry.write_text(BENCH_REGISTRY.format(tls_origination=str(mode == "enforce").lower()))
    port_file = work / f"sharewall-{mode}.ports"
    port_file.unlink(missing_ok=True)
    log_file = open(work / f"sharewall-{mode}.log", "wb")  # noqa: SIM115 - lives with the process
    cmd = [
        str(exe),
        *proxy_args(registry, port_file, work / f"spool-{mode}", mode),
        "--upstream-ca",
        str(cert_dir / "ca.pem"),
        "--resolve",
        f"{UPSTREAM_HOST}:{ports['plain']}:127.0.0.1",
        "--resolve",
        f"{UPSTREAM_HOST}:{ports['tls']}:127.0.0.1",
        "--max-body-bytes",
        str(2 << 20),  # the in-flight measurement sends 1 MB bodies that must go upstream
    ]
    process = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        bound = wait_proxy_ready(port_file, 30)
    except Exception:
        process.terminate()
        tail = (work / f"sharewall-{mode}.log").read_text(errors="replace")[-800:]
        return f"sharewall did not start: {tail}"
    return Contender(
        ENFORCE if mode == "enforce" else REPORT,
        bound["listen"][1],
        f"http://{UPSTREAM_HOST}:{upstream_port}/v1/messages",
        f"{UPSTREAM_HOST}:{upstream_port}",
        process,
        log_file=work / f"sharewall-{mode}.log",
        direct_port=ports["plain"],
    )


def stop(contender: Contender) -> None:
    if contender.process is None:
        return
    contender.process.terminate()
    try:
        contender.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        contender.process.kill()
        contender.process.wait()


# ---------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per run")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--latency-duration",
        type=float,
        default=2.0,
        help="seconds of a one-connection run per contender (added latency without queueing)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=1000.0,
        help="requests/s of the paced run (p99 added at a steady rate; 0 skips it)",
    )
    parser.add_argument("--rate-duration", type=float, default=3.0, help="seconds of the paced run")
    parser.add_argument("--idle", type=int, default=500, help="idle connections for RSS")
    parser.add_argument("--inflight", type=int, default=16, help="in-flight 1 MB requests")
    parser.add_argument("--hold", type=float, default=3.0, help="seconds the upstream holds /slow")
    parser.add_argument(
        "--only",
        nargs="*",
        help="contenders to run (direct smokescreen tinyproxy mitmproxy sharewall)",
    )
    parser.add_argument("--serve-upstream", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--cert-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.serve_upstream:
        asyncio.run(_serve_upstream(args.serve_upstream, args.cert_dir, args.hold))
        return 0
    if shutil.which("wrk") is None:
        # Skipped, not failed: `make bench` runs on machines without wrk too.
        print("skip bench_proxy: wrk is not installed (apt-get install -y wrk)")
        return 0

    wanted = set(args.only or ["direct", "smokescreen", "tinyproxy", "mitmproxy", "sharewall"])
    body = payload()
    work = Path(tempfile.mkdtemp(prefix="sharewall-bench-"))
    cert_dir = work / "certs"
    upstream, ports = start_upstream(work, args.hold)
    results: list[Result] = []
    try:
        plain = ports["plain"]
        print(
            f"load: wrk -t{args.threads} -c{args.connections} -d{round(args.duration)}s, "
            f"{len(body)} B JSON POST with a phone number, keep-alive; upstream pid "
            f"{upstream.pid} plain :{plain} tls :{ports['tls']}; work dir {work}",
            flush=True,
        )
        starters = []
        if "direct" in wanted:
            starters.append(
                (
                    "direct",
                    lambda: Contender("direct", None, "/v1/messages", f"127.0.0.1:{plain}"),
                )
            )
        if "smokescreen" in wanted:
            starters.append(("smokescreen", lambda: start_smokescreen(work, plain)))
        if "tinyproxy" in wanted:
            starters.append(("tinyproxy", lambda: start_tinyproxy(work, plain)))
        if "mitmproxy" in wanted:
            starters.append(("mitmproxy", lambda: start_mitmproxy(work, plain)))
        if "sharewall" in wanted:
            starters.append(
                (
                    ENFORCE,
                    lambda: start_sharewall(
                        work, ports, cert_dir, mode="enforce", upstream_port=ports["tls"]
                    ),
                )
            )
            starters.append(
                (
                    REPORT,
                    lambda: start_sharewall(
                        work, ports, cert_dir, mode="report", upstream_port=plain
                    ),
                )
            )
        for name, start in starters:
            started = start()
            if isinstance(started, str):
                print(f"skip {name}: {started}", flush=True)
                results.append(Result(name, skipped=started))
                continue
            try:
                slug = re.sub(r"\W+", "_", name)
                script = work / f"{slug}.lua"
                script.write_text(wrk_script(started, body))
                if args.warmup > 0:
                    run_wrk(
                        started,
                        script,
                        threads=args.threads,
                        connections=args.connections,
                        duration=args.warmup,
                    )
                cpu_before = tree_cpu_seconds(started.process.pid) if started.process else 0.0
                result = run_wrk(
                    started,
                    script,
                    threads=args.threads,
                    connections=args.connections,
                    duration=args.duration,
                )
                if started.process is not None and result.requests:
                    cpu = tree_cpu_seconds(started.process.pid) - cpu_before
                    result.cpu_us = cpu * 1e6 / result.requests
                if args.latency_duration > 0:
                    single = run_wrk(
                        started, script, threads=1, connections=1, duration=args.latency_duration
                    )
                    result.p50_c1_ms = single.p50_ms
                if args.rate > 0:
                    paced(result, started, args)
                if (
                    started.process is not None
                    and result.rps > 0
                    and "non-2xx" not in result.errors
                ):
                    result.idle_kib, result.idle_note = measure_idle(started, body, args.idle)
                    result.inflight_kib, result.inflight_note = measure_inflight(
                        started, args.inflight, args.hold
                    )
                results.append(result)
                print(
                    f"  {name:<{NAME_WIDTH}} {result.rps:>9.0f} req/s  p50 {result.p50_ms:7.2f} "
                    f"ms  p99 {result.p99_ms:7.2f} ms  {result.errors}",
                    flush=True,
                )
            finally:
                stop(started)
            if started.log_file is not None:
                # What the proxy decided for every call of the run (enforce must allow them).
                result.decisions = decision_tally(started.log_file)
    finally:
        upstream.send_signal(signal.SIGTERM)
        try:
            upstream.wait(timeout=10)
        except subprocess.TimeoutExpired:
            upstream.kill()
    report(results, args.rate)
    return 0


def report(results: list[Result], rate: float) -> None:
    """The table of every contender, then the ratios and latency the issue sets as goals."""
    by_name = {r.name: r for r in results if not r.skipped}
    w = NAME_WIDTH
    at = f"@{rate:.0f}/s"
    print()
    print(
        f"{'contender':<{w}} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'p50@c1':>8} {'+p50@c1':>8} "
        f"{'p99' + at:>10} {'+p99' + at:>11} {'CPU us/req':>10} {'KiB/idle conn':>14} "
        f"{'KiB/1MB in flight':>18}  notes"
    )
    direct = by_name.get("direct")

    def num(value: float | None, width: int, fmt: str) -> str:
        return f"{value:{width}{fmt}}" if value is not None else f"{'':>{width}}"

    for r in results:
        if r.skipped:
            print(f"{r.name:<{w}} skipped: {r.skipped}")
            continue
        added_c1 = added_p99 = None
        if direct and r is not direct:
            if r.p50_c1_ms is not None and direct.p50_c1_ms:
                added_c1 = r.p50_c1_ms - direct.p50_c1_ms
            added_p99 = _p99_added(r, direct)
        # direct has no proxy process: no CPU figure of its own.
        cpu = num(r.cpu_us, 10, ".0f") if r is not direct else f"{'-':>10}"
        notes = "; ".join(
            n for n in (r.errors, r.paced_note, r.idle_note, r.inflight_note, r.decisions) if n
        )
        print(
            f"{r.name:<{w}} {r.rps:9.0f} {r.p50_ms:8.2f} {r.p99_ms:8.2f} "
            f"{num(r.p50_c1_ms, 8, '.3f')} {num(added_c1, 8, '.3f')} "
            f"{num(r.paced_p99_ms, 10, '.2f')} {num(added_p99, 11, '.2f')} {cpu} "
            f"{num(r.idle_kib, 14, '.1f')} {num(r.inflight_kib, 18, '.0f')}  {notes}"
        )
    print()
    print(
        "CPU us/req: user + system time of the proxy's process tree over the wrk run, divided by "
        f"the calls answered. p99{at}: round trip at a paced {rate:.0f} requests/s "
        "(bench_footprint's load), +p99: what the proxy adds to direct's, both loaded at once (one run).\n"
        f"{ENFORCE}: allowed by the bench registry, inspected, decided, logged and sent upstream "
        "over TLS (tls_origination); the other proxies forward plain HTTP.\n"
        f"{REPORT}: the same request forwarded plain (enforce would deny it: personal data in "
        "cleartext), like for like with the other proxies."
    )
    for mine in (ENFORCE, REPORT):
        sw = by_name.get(mine)
        if sw is None:
            continue
        if sw.cpu_us is not None:
            others = ", ".join(
                f"{name} {by_name[name].cpu_us / sw.cpu_us:.2f}x"
                for name in ("smokescreen", "tinyproxy", "mitmproxy")
                if name in by_name and by_name[name].cpu_us
            )
            print(
                f"{mine} CPU per call: {sw.cpu_us:.0f} us (goal <= 100 us, ratio "
                f"{sw.cpu_us / 100:.2f}); others' CPU per call / ours: {others or 'none run'}"
            )
        for other, goal in (("mitmproxy", ">= 10x"), ("tinyproxy", ">= 0.5x")):
            if other in by_name and by_name[other].rps:
                print(
                    f"{mine}/{other} throughput: {sw.rps / by_name[other].rps:.2f}x (goal {goal})"
                )
        if direct and sw.p50_c1_ms is not None and direct.p50_c1_ms is not None:
            print(
                f"{mine} p50 added vs direct, one connection: "
                f"{sw.p50_c1_ms - direct.p50_c1_ms:.3f} ms (goal < 1 ms); at "
                f"the load's concurrency: {sw.p50_ms - direct.p50_ms:.2f} ms"
            )
        added = _p99_added(sw, direct)
        if added is not None and sw.paced_p99_ms is not None:
            print(
                f"{mine} p99 added vs direct at {rate:.0f} req/s (both loads at once): "
                f"{sw.paced_p99_ms:.2f} - {sw.paced_direct_p99_ms:.2f} = {added:.2f} ms "
                f"(goal <= 2 ms, ratio {added / 2:.2f})"
            )


def _p99_added(r: Result, direct: Result | None) -> float | None:
    """p99 through `r` minus direct's, from the run that loaded both at once (`paired_load`);
    direct's own run only for a contender paced without the pair."""
    if r.paced_p99_ms is None or r is direct:
        return None
    if r.paced_direct_p99_ms is not None:
        return r.paced_p99_ms - r.paced_direct_p99_ms
    if direct is not None and direct.paced_p99_ms is not None:
        return r.paced_p99_ms - direct.paced_p99_ms
    return None


if __name__ == "__main__":
    sys.exit(main())
