"""`sharewall proxy --workers N`: N worker processes sharing the listening ports, one admin port.

- **Ports**: the supervisor binds each listener's address with `SO_REUSEPORT` (port 0 becomes a
  real port here, once) without listening, which keeps the port while a worker restarts; each
  worker (`proxy.worker`) listens on the same address with `SO_REUSEPORT` and the kernel
  spreads new connections over the workers.
- **State per worker**: worker 0 uses the spool directory itself (it is what a single process
  would be: the same segments, ledger and proxy id), worker K>0 `DIR/worker-K` and proxy id
  `<id>-wK`. The spool's flock, its segments and the shipping stay per worker; a restarted
  worker finds its predecessor's segments in its own directory and ships them once.
- **Admin**: the supervisor serves `/healthz`, `/readyz` (ready when every worker is; the
  reasons name the workers that are not) and `/metrics` (the workers' metrics summed, a dead
  worker's last counters carried on so sums never go back, plus `sharewall_worker_*`).
- **Lifecycle**: a worker that exits is restarted with backoff (0.5 s doubling to 30 s; reset
  after 30 s up); one that fails before the first start of all is a start-up error (the
  supervisor stops the others and exits with its code). SIGTERM/SIGINT: every worker drains
  its calls in flight (`--drain-timeout`) and exits; the supervisor exits 0 when all did.

The supervisor imports neither the proxy app nor aiohttp or the policy engine: it only starts
processes, reads their admin ports and adds numbers (prometheus_client reads and writes the
expositions).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field, replace

import orjson
import structlog

from proxy import metrics_merge
from proxy.admin import AdminResponse, AdminServer, Route, readiness_response
from proxy.control_client import ControlClient, ControlClientError, ControlResponse
from proxy.http1 import RequestHead
from proxy.prometheus import (
    OPENMETRICS_ACCEPT,
    CounterMetricFamily,
    GaugeMetricFamily,
    load_text_format_for,
)
from proxy.settings import Settings
from proxy.spool_leftovers import worker_spool_dir
from proxy.worker import ENV_FD, send_orders

log = structlog.get_logger("sharewall.proxy.supervisor")

BACKOFF_BASE = 0.5
BACKOFF_CAP = 30.0
STABLE_AFTER = 30.0  # seconds up after which a worker's next exit restarts it at once again
SCRAPE_TIMEOUT = 2.0
# A worker not answering /healthz HEALTH_MISSES times in a row, HEALTH_INTERVAL s apart, is
# killed and restarted (a hung event loop); $SHAREWALL_WORKER_HEALTH_INTERVAL shortens it.
HEALTH_INTERVAL = float(os.environ.get("SHAREWALL_WORKER_HEALTH_INTERVAL") or 5.0)
HEALTH_TIMEOUT = min(3.0, HEALTH_INTERVAL)
HEALTH_MISSES = 3


@dataclass
class WorkerSlot:
    """One worker position: the process filling it now, and what its predecessors left."""

    index: int
    process: asyncio.subprocess.Process | None = None
    admin: ControlClient | None = None  # to the worker's own admin port
    state: str = "starting"  # starting, running, down, stopped
    started_at: float = 0.0
    restarts: int = 0
    failures: int = 0  # exits in a row without STABLE_AFTER seconds up
    last_exit: int | None = None
    restart_at: float = 0.0
    # Counters of exited processes in this slot, and of the running one's last scrape.
    carried: metrics_merge.Families = field(default_factory=dict)
    last_cumulative: metrics_merge.Families = field(default_factory=dict)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def exited(self, code: int) -> None:
        """The process is gone: keep its last counters, count the failure."""
        self.carried = metrics_merge.merge([self.carried, self.last_cumulative])
        self.last_cumulative = {}
        self.admin = None
        self.last_exit = code
        self.state = "down"
        up = time.monotonic() - self.started_at
        self.failures = 0 if up >= STABLE_AFTER else self.failures + 1


def describe_exit(code: int) -> str:
    """`exit code 2`, `killed by SIGKILL`."""
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
        return f"killed by signal {-code}"
    return f"exit code {code}"


class Supervisor:
    """Starts, watches, restarts and stops the workers; serves the aggregated admin port."""

    def __init__(self, settings: Settings, workers: int) -> None:
        self.settings = settings
        self.slots = [WorkerSlot(i) for i in range(workers)]
        self._reserved: list[socket.socket] = []
        self._listen: tuple[str, int] = settings.listen
        self._transparent: tuple[str, int] | None = settings.transparent_listen
        self._admin: AdminServer | None = None
        self._admin_address: tuple[str, int] | None = None
        self._stop = asyncio.Event()
        self._stopping = False
        self._all_started = asyncio.Event()
        self._failed = asyncio.Event()
        self._failure_code = 1

    # -- running -----------------------------------------------------------------------------

    async def run(self) -> int:
        """Run until SIGTERM/SIGINT; the exit code (2: a worker could not start)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        s = self.settings
        address = s.listen
        try:
            self._listen = self._reserve(address)
            if s.transparent_listen is not None:
                address = s.transparent_listen
                self._transparent = self._reserve(address, dualstack=True)
        except OSError as exc:
            self._release()
            return self._startup_failed(f"cannot listen on {address}: {exc}")
        if s.admin_listen is not None:
            self._admin = AdminServer(self._routes(), *s.admin_listen, settings=s)
            try:
                self._admin_address = await self._admin.start()
            except OSError as exc:
                self._release()
                return self._startup_failed(f"cannot listen on {s.admin_listen}: {exc}")
        keepers = [asyncio.create_task(self._keep(slot)) for slot in self.slots]
        try:
            waits = [asyncio.create_task(e.wait()) for e in (self._all_started, self._failed)]
            waits.append(asyncio.create_task(self._stop.wait()))
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for task in waits:
                task.cancel()
            if self._failed.is_set():
                await self._shutdown(keepers)
                return self._failure_code
            if not self._stop.is_set():
                self._write_port_file()
                log.info(
                    "proxy.listening",
                    host=self._listen[0],
                    port=self._listen[1],
                    admin_port=self._admin_address[1] if self._admin_address else None,
                    transparent_port=self._transparent[1] if self._transparent else None,
                    workers=len(self.slots),
                    sibling_addresses=(self._admin_address,) if self._admin_address else (),
                    worker_pids=[slot.pid for slot in self.slots],
                    mode=s.mode,
                    engine=s.engine,
                )
                await self._stop.wait()
            log.info("proxy.stopping", drain_timeout=s.drain_timeout, workers=len(self.slots))
            clean = await self._shutdown(keepers)
        finally:
            if self._admin is not None:
                await self._admin.close()
            self._release()
        log.info("proxy.stopped")
        return 0 if clean else 1

    def _release(self) -> None:
        for sock in self._reserved:
            sock.close()
        self._reserved.clear()

    def _startup_failed(self, reason: str) -> int:
        log.error("proxy.startup_failed", reason=reason)
        print(f"sharewall proxy: {reason}", file=sys.stderr, flush=True)
        return 2

    def _reserve(self, address: tuple[str, int], *, dualstack: bool = False) -> tuple[str, int]:
        """Bind `address` with SO_REUSEPORT, without listening: the workers' port, kept."""
        host, port = address
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # First as one process would bind it (no SO_REUSEPORT): a port somebody listens on,
        # another supervisor's workers included, is refused as it is without --workers; and
        # port 0 becomes a port of our own, not one shared with a reuseport group.
        with _tcp_socket(family, reuse_port=False, dualstack=dualstack) as probe:
            probe.bind((host, port))
            port = probe.getsockname()[1]
        sock = _tcp_socket(family, reuse_port=True, dualstack=dualstack)
        try:
            sock.bind((host, port))
        except OSError:
            sock.close()
            raise
        self._reserved.append(sock)
        bound = sock.getsockname()
        return bound[0], bound[1]

    def _orders(self, slot: WorkerSlot) -> dict[str, object]:
        s = self.settings
        worker = replace(
            s,
            listen=self._listen,
            transparent_listen=self._transparent,
            # The worker's own admin port, read by this supervisor only.
            admin_listen=("127.0.0.1", 0) if s.admin_listen is not None else None,
            port_file=None,
            spool_dir=worker_spool_dir(s.spool_dir, slot.index),
            reuse_port=True,
            workers=len(self.slots),
            sibling_addresses=(self._admin_address,) if self._admin_address else (),
        )
        return {"settings": worker, "index": slot.index}

    async def _keep(self, slot: WorkerSlot) -> None:
        """Keep a worker running in `slot` until the supervisor stops."""
        while not self._stopping:
            parent, child = socket.socketpair()
            try:
                env = dict(os.environ)
                env[ENV_FD] = str(child.fileno())
                slot.process = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "proxy.worker",
                    stdin=asyncio.subprocess.DEVNULL,
                    pass_fds=(child.fileno(),),
                    env=env,
                )
            finally:
                child.close()
            slot.state, slot.started_at = "starting", time.monotonic()
            log.info("supervisor.worker_started", worker=slot.index, pid=slot.pid)
            code = await self._watch(slot, parent)
            if slot.admin is not None:
                await slot.admin.close()
            slot.exited(code)
            if self._stopping:
                slot.state = "stopped"
                log.info("supervisor.worker_stopped", worker=slot.index, exit=describe_exit(code))
                return
            if not self._all_started.is_set():
                # A worker that cannot start (bad registry file, spool in use...) fails the
                # start: it said why on stderr.
                self._failure_code = code if code > 0 else 1
                self._failed.set()
                return
            delay = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (slot.failures - 1))
            slot.restart_at = time.monotonic() + delay
            log.error(
                "supervisor.worker_exited",
                worker=slot.index,
                exit=describe_exit(code),
                restart_in=round(delay, 2),
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
            slot.restarts += 1

    async def _watch(self, slot: WorkerSlot, channel: socket.socket) -> int:
        """Hand the worker its orders, wait for its hello, then for its exit; its exit code."""
        assert slot.process is not None
        try:
            send_orders(channel, self._orders(slot))
            reader, writer = await asyncio.open_connection(sock=channel)
        except OSError:
            channel.close()
            return await slot.process.wait()
        exited = asyncio.create_task(slot.process.wait())
        hello = asyncio.create_task(reader.readline())
        try:
            await asyncio.wait({exited, hello}, return_when=asyncio.FIRST_COMPLETED)
            line = hello.result() if hello.done() and not hello.exception() else b""
            if line:
                doc = orjson.loads(line)
                if doc.get("admin"):
                    host, port = doc["admin"]
                    slot.admin = ControlClient(f"http://{host}:{port}", max_idle=1)
                slot.state = "running"
                log.info("supervisor.worker_ready", worker=slot.index, pid=slot.pid)
                if all(s.state == "running" for s in self.slots):
                    self._all_started.set()
                if self._all_started.is_set():
                    self._write_port_file()
            # The channel stays open while the worker runs: its end seeing EOF means "stop".
            return await self._watchdog(slot, exited)
        finally:
            hello.cancel()
            writer.close()

    async def _watchdog(self, slot: WorkerSlot, exited: asyncio.Task[int]) -> int:
        """Wait for the worker's exit; kill it if its admin port stops answering `/healthz`.

        A worker whose event loop hangs would keep its share of the port's connections and never
        answer them, while the supervisor's own `/healthz` (what a liveness probe reads) is fine:
        after `HEALTH_MISSES` probes in a row without an answer it is killed, and restarted.
        """
        misses = 0
        while True:
            done, _ = await asyncio.wait({exited}, timeout=HEALTH_INTERVAL)
            if done:
                return exited.result()
            if slot.admin is None or self._stopping:
                continue
            try:
                healthy = (await _get(slot.admin, "/healthz", HEALTH_TIMEOUT)).ok
            except (OSError, TimeoutError, ControlClientError):
                healthy = False
            misses = 0 if healthy else misses + 1
            if misses >= HEALTH_MISSES and slot.process is not None:
                log.error(
                    "supervisor.worker_unresponsive",
                    worker=slot.index,
                    pid=slot.pid,
                    missed_probes=misses,
                )
                with contextlib.suppress(ProcessLookupError):
                    slot.process.kill()
                return await exited

    async def _shutdown(self, keepers: list[asyncio.Task[None]]) -> bool:
        """SIGTERM every worker, wait for them to drain and exit; True when all exited cleanly."""
        self._stopping = True
        self._stop.set()
        running = []
        for slot in self.slots:
            if slot.process is not None and slot.process.returncode is None:
                running.append(slot)
                with contextlib.suppress(ProcessLookupError):
                    slot.process.send_signal(signal.SIGTERM)
        _done, pending = await asyncio.wait(keepers, timeout=self.settings.drain_timeout + 15.0)
        for slot in self.slots:
            if slot.process is not None and slot.process.returncode is None:
                log.error("supervisor.worker_killed", worker=slot.index, pid=slot.pid)
                with contextlib.suppress(ProcessLookupError):
                    slot.process.kill()
        if pending:
            await asyncio.wait(pending, timeout=5.0)
        # A worker still importing when asked to stop dies of the SIGTERM: nothing was in flight.
        # One waiting to be restarted had nothing to drain either.
        return all(slot.last_exit in (0, -signal.SIGTERM) for slot in running)

    def _write_port_file(self) -> None:
        path = self.settings.port_file
        if path is None:
            return
        ports: dict[str, object] = {"listen": self._listen, "admin": self._admin_address}
        if self._transparent is not None:
            ports["transparent"] = self._transparent
        ports["workers"] = [
            {
                "index": slot.index,
                "pid": slot.pid,
                "admin": [slot.admin.host, slot.admin.port] if slot.admin else None,
                "state": slot.state,
            }
            for slot in self.slots
        ]
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(orjson.dumps(ports))
        os.replace(tmp, path)

    # -- the admin port ----------------------------------------------------------------------

    def _routes(self) -> dict[str, Route]:
        async def healthz(_head: RequestHead) -> AdminResponse:
            return AdminResponse.json({"status": "ok"})

        async def readyz(_head: RequestHead) -> AdminResponse:
            return readiness_response(*await self.readiness())

        async def metrics(head: RequestHead) -> AdminResponse:
            return AdminResponse(200, *await self.metrics_text(head.header("accept")))

        return {"/healthz": healthz, "/readyz": readyz, "/metrics": metrics}

    async def readiness(self) -> tuple[list[str], list[str]]:
        """Why the proxy is not ready (empty: ready) and its notices: every worker's, each
        named by worker."""
        if self._stopping:
            return ["stopping: the workers drain their calls in flight"], []
        answers = await asyncio.gather(*(self._slot_readiness(slot) for slot in self.slots))
        return (
            [reason for reasons, _ in answers for reason in reasons],
            [notice for _, notices in answers for notice in notices],
        )

    async def _slot_readiness(self, slot: WorkerSlot) -> tuple[list[str], list[str]]:
        name = f"worker {slot.index}"
        if slot.state == "down":
            wait = max(0.0, slot.restart_at - time.monotonic())
            exit_text = describe_exit(slot.last_exit or 0)
            return [f"{name} is down ({exit_text}), restarting in {wait:.1f} s"], []
        if slot.state != "running" or slot.admin is None:
            return [f"{name} is starting (pid {slot.pid})"], []
        try:
            answer = await _get(slot.admin, "/readyz")
        except (OSError, TimeoutError, ControlClientError) as exc:
            return [f"{name} (pid {slot.pid}) does not answer on its admin port ({exc!r})"], []
        try:
            doc = answer.json()
            reasons = doc.get("reasons") or []
            notices = doc.get("notices") or []
        except (orjson.JSONDecodeError, AttributeError):
            reasons, notices = [], []
        if not answer.ok and not reasons:
            reasons = [f"status {answer.status}"]
        if answer.ok:
            reasons = []
        return [f"{name}: {r}" for r in reasons], [f"{name}: {n}" for n in notices]

    async def metrics_text(self, accept: str | None = None) -> tuple[str, bytes]:
        """(Content-Type, body): every worker's metrics summed (exited workers' counters
        included), then our own, in the format `accept` asks for."""
        scraped = await asyncio.gather(*(self._scrape(slot) for slot in self.slots))
        parts: list[metrics_merge.Families] = []
        for slot, families in zip(self.slots, scraped, strict=True):
            parts.append(slot.carried)
            if families is not None:
                parts.append(families)
        merged = metrics_merge.merge(parts)
        merged.update(self._own_metrics())
        await load_text_format_for(accept)
        return metrics_merge.render(merged, accept)

    async def _scrape(self, slot: WorkerSlot) -> metrics_merge.Families | None:
        if slot.state != "running" or slot.admin is None:
            return None
        try:
            answer = await _get(slot.admin, "/metrics", headers={"Accept": OPENMETRICS_ACCEPT})
        except (OSError, TimeoutError, ControlClientError):
            return None
        if not answer.ok:
            return None
        families = metrics_merge.parse(answer.text())
        if slot.state == "running":
            slot.last_cumulative = metrics_merge.cumulative(families)
        return families

    def _own_metrics(self) -> metrics_merge.Families:
        up = GaugeMetricFamily(
            "sharewall_worker_up", "1 while the worker process runs and serves.", labels=["worker"]
        )
        restarts = CounterMetricFamily(
            "sharewall_worker_restarts",
            "Worker processes started again after one exited.",
            labels=["worker"],
        )
        for slot in self.slots:
            up.add_metric([str(slot.index)], 1.0 if slot.state == "running" else 0.0)
            restarts.add_metric([str(slot.index)], float(slot.restarts))
        return {up.name: up, restarts.name: restarts}


def _tcp_socket(family: int, *, reuse_port: bool, dualstack: bool) -> socket.socket:
    """A TCP socket with the options of `socket.create_server`, which the workers' listeners use."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            v6only = 0 if dualstack and socket.has_dualstack_ipv6() else 1
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, v6only)
    except OSError:
        sock.close()
        raise
    return sock


async def _get(
    client: ControlClient,
    path: str,
    seconds: float = SCRAPE_TIMEOUT,
    headers: dict[str, str] | None = None,
) -> ControlResponse:
    async with asyncio.timeout(seconds):
        return await client.get(path, headers=headers)


def run_supervisor(settings: Settings, workers: int) -> int:
    """Handler of `sharewall proxy --workers N` (N > 1): supervise until SIGTERM; the exit code."""
    # The supervisor's own loop is asyncio's: it does little, and the workers use `--loop`.
    return asyncio.run(Supervisor(settings, workers).run())
