"""The proxy end-to-end harness: test CAs, upstream servers, the proxy process, raw HTTP.

Everything listens on 127.0.0.1 with ephemeral ports. The upstream servers (one HTTP, one
HTTPS) run in a thread with their own event loop; the proxy runs as a subprocess exactly as
`sharewall proxy` runs in a pod, and its JSON log lines are read back from its stdout file.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import socketserver
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import trustme
from aiohttp import web

from proxy.certs import generate_ca

REPO = Path(__file__).resolve().parents[2]
REGISTRY_YAML = REPO / "tests" / "data" / "proxy" / "registry.yaml"
HOSTS = ("api.vendor.test", "origin.vendor.test", "tunnel.vendor.test", "partner.affiliate.test")
# A valid Singapore mobile number and a credential: neither may ever appear in a log line.
PHONE = "+6591234567"
SECRET_TOKEN = "sk_live_abcdef0123456789SECRET"


# -- certificates --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Certs:
    proxy_ca_cert: Path  # the proxy's interception CA (apps trust it)
    proxy_ca_key: Path
    upstream_ca: Path  # the CA the upstream servers' certificate chains to (--upstream-ca)
    upstream_server: trustme.LeafCert

    def upstream_server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.upstream_server.configure_cert(ctx)
        return ctx


# -- upstream servers ----------------------------------------------------------------------------


@dataclass
class Seen:
    """One request as an upstream server received it."""

    scheme: str
    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)


@dataclass
class Upstreams:
    http_port: int = 0
    https_port: int = 0
    closed_port: int = 0  # nothing listens there (upstream down)
    raw_port: int = 0  # a hand-written HTTP/1.x server with odd framings (see `_raw_upstream`)
    seen: list[Seen] = field(default_factory=list)
    _loop: asyncio.AbstractEventLoop | None = None

    def find(self, marker: str) -> list[Seen]:
        """Requests whose path contains `marker` (each test uses its own marker)."""
        return [s for s in list(self.seen) if marker in s.path]


def counting_bytes(size: int) -> bytes:
    """`size` bytes counting 0..255 over and over (what `/bytes/{n}` answers)."""
    return bytes(range(256)) * (size // 256) + bytes(range(size % 256))


def _echo_app(upstreams: Upstreams, scheme: str) -> web.Application:
    async def handler(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        upstreams.seen.append(
            Seen(scheme, request.method, request.path_qs, list(request.headers.items()), body)
        )
        if request.path.startswith("/slow/"):
            await asyncio.sleep(float(request.path.rsplit("/", 1)[1]))
        if request.path.startswith("/nocontent"):
            return web.Response(status=204)
        if request.path.startswith("/bytes/"):
            # `/bytes/{n}/...`: n bytes counting 0..255 over and over, with a Content-Length,
            # written in 64 KiB pieces.
            size = int(request.path.split("/")[2])
            resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
            resp.content_length = size
            await resp.prepare(request)
            for start in range(0, size, 1 << 16):
                await resp.write(counting_bytes(min(1 << 16, size - start)))
            return resp
        if request.path.startswith("/stream"):
            resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            for i in range(5):
                await resp.write(f"chunk-{i};".encode() * 1000)
            await resp.write_eof()
            return resp
        payload = {
            "scheme": scheme,
            "method": request.method,
            "path": request.path_qs,
            "body_len": len(body),
            "headers": [[k, v] for k, v in request.headers.items()],
        }
        return web.json_response(
            payload,
            headers={
                "X-Upstream": "yes",
                "X-Sharewall-Spoofed": "from-upstream",
                "X-Hop": "drop-me",
                "Connection": "keep-alive, X-Hop",
                "Keep-Alive": "timeout=5",
            },
        )

    app = web.Application(client_max_size=64 << 20)
    app.router.add_route("*", "/{tail:.*}", handler)
    return app


class _RawHandler(socketserver.BaseRequestHandler):
    """Answers by path with framings aiohttp's server never produces.

    `/close-delimited`: an HTTP/1.0 body ended by closing the connection; `/short-body`: closes
    after 10 of the 100 bytes its Content-Length promised; `/trailers`: a chunked body with a
    trailer; `/garbage`: not HTTP at all; `/drop-second/{marker}/...`: answers the first
    request of a marker on a connection with keep-alive, then closes the connection on the
    marker's second one unanswered (an upstream that timed the idle connection out just as it
    was reused); `/no-reason`: a status line without a reason phrase; `/reason/{code}/{reason}`:
    that status line (the reason percent-decoded); `/no-content`: a 204
    with a Content-Length (which a 204 must not carry); `/not-modified`: a 304 with one;
    `/early-hints`: a 103 before the answer; `/switch`: a 101 nobody asked for; `/stall`: half
    its body, the rest half a second later.
    """

    def handle(self) -> None:
        sock = self.request
        sock.settimeout(10)
        buf = b""
        dropping: set[str] = set()  # the /drop-second/{marker} this connection answered
        while True:
            while b"\r\n\r\n" not in buf:
                data = sock.recv(65536)
                if not data:
                    return
                buf += data
            head, _, buf = buf.partition(b"\r\n\r\n")
            method, path, _ = head.decode("latin-1").split(" ", 2)
            # The proxy frames what it sends upstream with a Content-Length (or nothing).
            length = re.search(r"\r\ncontent-length: *(\d+)", head.decode("latin-1"), re.I)
            while length and len(buf) < int(length[1]):
                data = sock.recv(65536)
                if not data:
                    return
                buf += data
            size = int(length[1]) if length else 0
            body, buf = buf[:size], buf[size:]
            self.server.seen.append(Seen("raw", method, path, [], body))  # type: ignore[attr-defined]
            if path.startswith("/close-delimited"):
                sock.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n" + b"x" * 5000)
                return
            if path.startswith("/trailers"):
                sock.sendall(
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n"
                    b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 11\r\n\r\n"
                )
                continue
            if path.startswith("/short-body"):
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
                return
            if path.startswith("/garbage"):
                sock.sendall(b"SPDY/9 what\r\n\r\n")
                return
            if path.startswith("/drop-second"):
                marker = path.split("/")[2]
                if marker in dropping:
                    return
                dropping.add(marker)
            if path.startswith("/no-reason"):
                sock.sendall(b"HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok")
                continue
            if path.startswith("/reason/"):
                _, _, code, reason = path.split("/", 3)
                line = f"HTTP/1.1 {code} {urllib.parse.unquote(reason)}\r\n".encode("latin-1")
                sock.sendall(line + b"Content-Length: 2\r\n\r\nok")
                continue
            if path.startswith("/not-modified"):
                sock.sendall(
                    b'HTTP/1.1 304 Not Modified\r\nETag: "v1"\r\nContent-Length: 5\r\n\r\n'
                )
                continue
            if path.startswith("/no-content"):
                sock.sendall(b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n")
                continue
            if path.startswith("/early-hints"):
                sock.sendall(
                    b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
                    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal"
                )
                continue
            if path.startswith("/switch"):
                sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n")
                return
            if path.startswith("/stall"):
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n0123456789")
                time.sleep(0.5)
                with contextlib.suppress(OSError):
                    sock.sendall(b"0123456789")
                return
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")


def free_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_certs(d: Path) -> Certs:
    """A proxy interception CA and a trustme CA with a leaf for every test host, under `d`."""
    generate_ca(d / "proxy-ca.pem", d / "proxy-ca.key")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(d / "upstream-ca.pem"))
    leaf = ca.issue_cert(*HOSTS, "127.0.0.1")
    return Certs(d / "proxy-ca.pem", d / "proxy-ca.key", d / "upstream-ca.pem", leaf)


@contextlib.contextmanager
def run_upstreams(certs: Certs) -> Iterator[Upstreams]:
    """The HTTP and HTTPS echo servers, in a thread with their own loop."""
    ups = Upstreams()
    ready = threading.Event()
    runners: list[web.AppRunner] = []

    async def setup() -> None:
        for scheme, ctx in (("http", None), ("https", certs.upstream_server_context())):
            runner = web.AppRunner(_echo_app(ups, scheme), access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
            await site.start()
            runners.append(runner)
            port = runner.addresses[0][1]
            if scheme == "http":
                ups.http_port = port
            else:
                ups.https_port = port

    def run() -> None:
        loop = asyncio.new_event_loop()
        ups._loop = loop
        loop.run_until_complete(setup())
        ready.set()
        loop.run_forever()
        for runner in runners:
            loop.run_until_complete(runner.cleanup())
        loop.close()

    thread = threading.Thread(target=run, name="upstreams", daemon=True)
    thread.start()
    assert ready.wait(10), "upstream servers did not start"
    ups.closed_port = free_port()
    raw_server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _RawHandler)
    raw_server.daemon_threads = True
    raw_server.seen = ups.seen  # type: ignore[attr-defined]
    threading.Thread(target=raw_server.serve_forever, name="raw-upstream", daemon=True).start()
    ups.raw_port = raw_server.server_address[1]
    yield ups
    assert ups._loop is not None
    ups._loop.call_soon_threadsafe(ups._loop.stop)
    thread.join(10)


# -- the proxy process ---------------------------------------------------------------------------


def wait_for_lines(
    read: Callable[[], list[dict[str, Any]]],
    match: Callable[[dict[str, Any]], bool],
    *,
    count: int = 1,
    timeout: float = 5.0,
) -> list[dict[str, Any]]:
    """The log lines (`read()`) that `match` accepts, once there are `count` or `timeout` passed.

    A proxy's lines reach stdout through its writer thread, in batches a few ms after the call
    that made them: a test reads them by waiting, never right after the answer.
    """
    deadline = time.monotonic() + timeout
    while True:
        found = [line for line in read() if match(line)]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


class ProxyProcess:
    """A running `sharewall proxy` subprocess and its log."""

    def __init__(
        self,
        workdir: Path,
        args: list[str],
        *,
        python_args: tuple[str, ...] = (),
        stdout_pipe: bool = False,
        env: dict[str, str] | None = None,
    ) -> None:
        """`stdout_pipe`: the proxy's stdout is `self.proc.stdout`, a pipe the test reads (or
        stops reading), instead of the log file. `env`: variables added to the process's."""
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / "proxy.log"
        self.spool_dir = workdir / "spool"
        port_file = workdir / "ports.json"
        cmd = [
            sys.executable,
            *python_args,  # e.g. -X importtime
            "-m",
            "sharewall.cli",
            "proxy",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--port-file",
            str(port_file),
            "--spool-dir",
            str(self.spool_dir),
            *args,
        ]
        environ = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
        environ["SHAREWALL_SOURCE"] = "test-workload"
        environ["POD_NAMESPACE"] = "test-ns"
        environ.update(env or {})
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE if stdout_pipe else self._log,
            stderr=self._log if stdout_pipe else subprocess.STDOUT,
            cwd=REPO,
            env=environ,
        )
        deadline = time.monotonic() + 120  # start-up on a loaded 2-core machine
        while not port_file.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                raise RuntimeError(f"proxy did not start:\n{self.log_path.read_text()}")
            time.sleep(0.05)
        ports = json.loads(port_file.read_text())
        self.port = ports["listen"][1]
        self.admin_port = ports["admin"][1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def session(self) -> requests.Session:
        """A requests session whose plain-HTTP calls go through this proxy (no proxy env)."""
        session = requests.Session()
        session.trust_env = False
        session.proxies = {"http": self.url}
        return session

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def logs(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def lines_where(
        self, match: Callable[[dict[str, Any]], bool], *, count: int = 1, timeout: float = 5.0
    ) -> list[dict[str, Any]]:
        """This proxy's log lines `match` accepts (`wait_for_lines`)."""
        return wait_for_lines(self.logs, match, count=count, timeout=timeout)

    def decision(self, decision_id: str, timeout: float = 5.0) -> dict[str, Any]:
        """The `egress.decision` line of one decision id (waits for the log to be written)."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.logs():
                if (
                    line.get("event") == "egress.decision"
                    and line.get("decision_id") == decision_id
                ):
                    return line
            if time.monotonic() > deadline:
                raise AssertionError(f"no decision line for {decision_id}")
            time.sleep(0.05)

    def decisions_for(
        self, marker: str, timeout: float = 5.0, *, count: int = 1
    ) -> list[dict[str, Any]]:
        """The decision lines whose path contains `marker` (waits for at least `count`)."""
        deadline = time.monotonic() + timeout
        while True:
            found = [
                line
                for line in self.logs()
                if line.get("event") == "egress.decision" and marker in (line.get("path") or "")
            ]
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        # pyo3 says so on stderr (merged into the log) when a regorus engine is released off
        # the thread that built it (and leaks it): never acceptable, whatever the test did.
        unsendable = [x for x in self.log_text().splitlines() if "is unsendable" in x]
        assert not unsendable, unsendable
        return self.proc.returncode


def pins(upstreams: Upstreams) -> list[str]:
    """`--resolve` flags pinning every test host, on both upstream ports, to 127.0.0.1."""
    out = []
    for host in HOSTS:
        for port in (
            upstreams.http_port,
            upstreams.https_port,
            upstreams.closed_port,
            upstreams.raw_port,
        ):
            out += ["--resolve", f"{host}:{port}:127.0.0.1"]
    return out


def start_proxy(
    workdir: Path,
    certs: Certs,
    upstreams: Upstreams,
    *extra: str,
    registry: Path | None = None,
    env: dict[str, str] | None = None,
) -> ProxyProcess:
    """Start a proxy on the test registry with interception, the upstream CA and the pins."""
    return ProxyProcess(
        workdir,
        [
            "--registry-file",
            str(registry or REGISTRY_YAML),
            "--default-purpose",
            "service_delivery",
            "--ca-cert",
            str(certs.proxy_ca_cert),
            "--ca-key",
            str(certs.proxy_ca_key),
            "--upstream-ca",
            str(certs.upstream_ca),
            *pins(upstreams),
            *extra,
        ],
        env=env,
    )


# -- raw HTTP ------------------------------------------------------------------------------------


def raw_exchange(port: int, data: bytes, *, timeout: float = 5.0) -> bytes:
    """Send raw bytes to the proxy and read until it closes the connection (or `timeout`)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        except TimeoutError:
            pass
    return b"".join(chunks)


def parse_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """(status, lower-cased headers, body) of the first response in `raw`."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers, body
