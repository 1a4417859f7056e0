"""Footprint of one `sharewall proxy` sidecar: idle RSS, start to ready, RSS and CPU under load.

    .venv/bin/python bench/bench_footprint.py [--rate 1000] [--duration 5] [--connections 64]
                                              [--optimize 2] [--tree DIR]

Starts `sharewall proxy --mode report` on the sample registry (`examples/registry.yaml`) with
the recipient `api.singtel.com` pinned (`--resolve`) to a plain HTTP upstream on loopback (its
own process), as a pod runs it: PYTHONOPTIMIZE=2 (the injector and the chart set it) with the
bytecode of both levels written first (the image holds it); `--optimize 0` as `make run` does.
Measures, on the proxy process only:

- start to ready: from spawning the process to the first 200 from `/readyz`, and the CPU time
  (`utime + stime`, with the children it waited for: the registry file's decoding child) the
  process had used by then: on a busy machine the wall time is mostly waiting for a core, the
  CPU time is what the start costs;
- idle RSS: `VmRSS` from `/proc/PID/status`, one second after ready;
- RSS under load: the highest `VmRSS` sampled every 100 ms while a paced load of `--rate`
  requests/s (1 KB JSON POST carrying a phone number, purpose `service_delivery`, keep-alive,
  `--connections` connections) runs for `--duration` seconds after a warm-up;
- CPU per call: `utime + stime` from `/proc/PID/stat` over the load, divided by the calls;
- p99 added: then the same load through the proxy and straight to the upstream at once
  (`paired_load`, the direct requests half a period after the proxied ones), p99 of each.

Each figure is printed against the goal of issue 10 as a ratio (≤ 1.0 meets it). Then where
the idle VmRSS is: `RssAnon` (the process's own memory) against `RssFile` (pages of the
interpreter, libcrypto and the extension modules, mapped from files: one copy in the page cache
for every process on the node that maps the same files), PSS, and two floors measured in the
same run: a bare interpreter with asyncio and ssl imported, and one that also holds the
embedded Rego engine (regorus, the policy compiled, one evaluation).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_proxy import _UpstreamProtocol, payload, proxy_args  # noqa: E402

SAMPLE_REGISTRY = ROOT / "examples" / "registry.yaml"
HOST = "api.singtel.com"  # approved for service_delivery with contact.phone_number
PURPOSE = "service_delivery"
# Goals of issue 10: (label, goal, unit).
GOALS = {
    "idle": ("idle RSS", 40.0, "MB"),
    "ready": ("start to ready", 0.5, "s"),
    "ready_cpu": ("  its CPU time", 0.5, "s"),
    "load_rss": ("RSS at {rate} req/s", 60.0, "MB"),
    "cpu": ("CPU per call", 100.0, "us"),
}


def _upstream(conn: multiprocessing.connection.Connection) -> None:
    """A plain HTTP/1.1 upstream answering 200 to everything (runs in its own process)."""

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _UpstreamProtocol(0.0), "127.0.0.1", 0)
        conn.send(server.sockets[0].getsockname()[1])
        await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


def start_upstream() -> tuple[multiprocessing.Process, int]:
    """Start `_upstream` in its own process; (the process, its port). The caller kills it."""
    parent, child = multiprocessing.Pipe()
    upstream = multiprocessing.Process(target=_upstream, args=(child,), daemon=True)
    upstream.start()
    return upstream, parent.recv()


def rss_mib(pid: int) -> float:
    """VmRSS of one process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def memory_mib(pid: int) -> dict[str, float]:
    """VmRSS, RssAnon, RssFile (`/proc/PID/status`) and Pss (`smaps_rollup`) of one process, MiB."""
    fields: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "RssAnon", "RssFile"):
            fields[name] = int(value.split()[0]) / 1024
    with contextlib.suppress(OSError):  # smaps_rollup: Linux 4.14+
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                fields["Pss"] = int(line.split()[1]) / 1024
    return fields


# What a process needs before any of sharewall: measured in a child, like the proxy.
_FLOOR_ASYNCIO = "import asyncio, ssl"
_FLOOR_REGO = """
import os
os.environ["MIMALLOC_ARENA_EAGER_COMMIT"] = "0"  # as proxy.engines sets it
import asyncio, ssl, pathlib, regorus
engine = regorus.Engine()
root = pathlib.Path({root!r})
for path in sorted(root.rglob("*.rego")):
    if not path.name.endswith("_test.rego"):
        engine.add_policy(str(path), path.read_text())
engine.add_data_json('{{"sharewall": {{"taxonomy": ' + (root / {taxonomy!r}).read_text() + "}}}}")
engine.set_input_json("{{}}")
engine.eval_rule_as_json("data.sharewall.egress.decision")
"""


def floor_mib(code: str, env_extra: dict[str, str] | None = None) -> dict[str, float]:
    """The memory of a child interpreter (this one's flags, `env_extra` added to its
    environment: the proxy's PYTHONOPTIMIZE) after running `code`."""
    report = "\nimport os; print(os.getpid(), flush=True); input()"
    child = subprocess.Popen(
        [sys.executable, "-c", code + report],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, **(env_extra or {})},
        text=True,
    )
    try:
        assert child.stdout is not None
        return memory_mib(int(child.stdout.readline()))
    finally:
        child.communicate("\n", timeout=30)


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process so far, with the children it has waited for, in seconds.

    The children count: the proxy decodes its registry file in a child process at start."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(field) for field in fields[11:15])  # utime, stime, cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def compile_bytecode(root: Path = ROOT, *, optimize: int = 0) -> None:
    """Write the `.pyc` files the image holds: the project's, and at level `optimize` (the
    sidecar's PYTHONOPTIMIZE) the standard library's and the installed packages' too.

    A checkout run with `PYTHONDONTWRITEBYTECODE=1` (this machine's setting, and the image's at
    run time) would otherwise compile every module of ours from source at each start: ~0.1 s of
    CPU and ~1 MB of RSS a pod never pays. `__pycache__/` is ignored by git. Interpreters
    install level 0 of their stdlib; the image compiles level 2 as well (Dockerfile): written
    here where it can be (once; later runs only compare times), else the start compiles it."""
    levels = sorted({0, optimize})
    flags = [arg for level in levels for arg in ("-o", str(level))]
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", *flags, "proxy", "sharewall"],
        cwd=root,
        check=True,
    )
    if optimize:
        paths = sysconfig.get_paths()
        trees = sorted({paths["stdlib"], paths["purelib"], paths["platlib"]})
        command = [sys.executable, "-m", "compileall", "-q", "-j", "0", "-o", str(optimize)]
        done = subprocess.run([*command, "-x", "/(tests?|idle_test)/", *trees], capture_output=True)
        if done.returncode:
            print(f"note: the stdlib's or the packages' level-{optimize} bytecode is incomplete")


def start_proxy(
    work: Path,
    upstream_port: int,
    *,
    registry: Path = SAMPLE_REGISTRY,
    host: str = HOST,
    extra: tuple[str, ...] = (),
    source: tuple[str, ...] | None = None,
    env_extra: dict[str, str] | None = None,
    cwd: Path = ROOT,
) -> tuple[subprocess.Popen[bytes], int, float]:
    """Start the proxy; (process, listen port, seconds from spawn to the first ready 200).

    `source` replaces `--registry-file REGISTRY` (e.g. `--registry-url URL`); `env_extra` and
    `cwd` let another bench run a different tree or add a hook (`-m` puts cwd first on sys.path)."""
    port_file = work / "ports.json"
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env.update(env_extra or {})
    cmd = [
        sys.executable,
        "-m",
        "sharewall.cli",
        *proxy_args(registry, port_file, work / "spool", "report", source=source),
        "--resolve",
        f"{host}:{upstream_port}:127.0.0.1",
        *extra,
    ]
    log = open(work / "proxy.log", "wb")  # noqa: SIM115 - the process's stdout, like a pod's
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=cwd, env=env)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + 60
    ports = None
    while True:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"proxy did not start:\n{(work / 'proxy.log').read_text()}")
        if ports is None and port_file.exists():
            with contextlib.suppress(ValueError):
                ports = json.loads(port_file.read_text())
        if ports is not None:
            url = f"http://127.0.0.1:{ports['admin'][1]}/readyz"
            with contextlib.suppress(OSError), opener.open(url, timeout=1) as resp:
                if resp.status == 200:
                    return proc, ports["listen"][1], time.perf_counter() - started
        time.sleep(0.005)


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    status = int(head.split(" ", 2)[1])
    headers = {}
    for line in head.split("\r\n")[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip().lower()
    if "chunked" in headers.get("transfer-encoding", ""):
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    else:
        await reader.readexactly(int(headers.get("content-length", "0")))
    return status


async def paced_load(
    port: int,
    upstream_port: int,
    *,
    rate: float,
    duration: float,
    connections: int,
    host: str = HOST,
    sent_at: list[float] | None = None,
    stop: asyncio.Event | None = None,
    offset: float = 0.0,
) -> tuple[int, int, list[float]]:
    """`rate` requests/s for `duration` s over keep-alive connections; (ok, failed, latencies).

    With `sent_at`, the `time.monotonic()` of each request is appended to it (same order as the
    latencies). Setting `stop` ends the load early. `offset` (s) shifts the schedule."""
    body = payload(1024)
    request = (
        f"POST http://{host}:{upstream_port}/v1/sms HTTP/1.1\r\n"
        f"Host: {host}:{upstream_port}\r\n"
        f"X-Sharewall-Purpose: {PURPOSE}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    total = int(rate * duration)
    ok = failed = 0
    latencies: list[float] = []
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.05 + offset

    async def worker(k: int) -> None:
        nonlocal ok, failed
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for i in range(k, total, connections):
                if stop is not None and stop.is_set():
                    break
                delay = start + i / rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                sent = time.perf_counter()
                writer.write(request)
                status = await _read_response(reader)
                latencies.append(time.perf_counter() - sent)
                if sent_at is not None:
                    sent_at.append(time.monotonic() - (time.perf_counter() - sent))
                if status == 200:
                    ok += 1
                else:
                    failed += 1
        finally:
            writer.close()

    await asyncio.gather(*(worker(k) for k in range(connections)))
    return ok, failed, latencies


async def paired_load(
    port: int,
    upstream_port: int,
    *,
    rate: float,
    duration: float,
    connections: int,
    host: str = HOST,
    direct_port: int | None = None,
) -> tuple[tuple[int, int, list[float]], tuple[int, int, list[float]]]:
    """The paced load through the proxy and the same load straight to the upstream, at once.

    Both run on this one client loop against the one upstream, the direct requests half a
    period after the proxied ones: whatever the client, the upstream and the machine add to a
    round trip, they add to both in the same moments, so p99(through) - p99(direct) of one run
    is what the proxy adds. (Measured in two runs one after the other, the difference swung by
    milliseconds with the machine's load.) The upstream answers twice the rate.
    `direct_port`: where the direct load goes when `upstream_port` is the upstream's TLS port
    (the proxy originates TLS there; the direct load speaks plain HTTP to the same server).
    """
    direct_port = direct_port or upstream_port
    through, direct = await asyncio.gather(
        paced_load(
            port, upstream_port, rate=rate, duration=duration, connections=connections, host=host
        ),
        paced_load(
            direct_port,
            direct_port,
            rate=rate,
            duration=duration,
            connections=connections,
            host=host,
            offset=0.5 / rate,
        ),
    )
    return through, direct


def p99(latencies: list[float]) -> float:
    """The 99th percentile of round trips in seconds, in ms."""
    ordered = sorted(latencies)
    return ordered[int(len(ordered) * 0.99)] * 1e3


async def measure_load(
    pid: int, port: int, upstream_port: int, args: argparse.Namespace
) -> dict[str, float]:
    """Warm up, then run the paced load while sampling RSS; the figures of the load."""
    await paced_load(
        port, upstream_port, rate=args.rate, duration=1.0, connections=args.connections
    )
    peak = memory_mib(pid)
    sampling = True

    async def sample() -> None:
        nonlocal peak
        while sampling:
            now = memory_mib(pid)
            if now["VmRSS"] > peak["VmRSS"]:
                peak = now
            await asyncio.sleep(0.1)

    sampler = asyncio.create_task(sample())
    cpu_before, wall_before = cpu_seconds(pid), time.perf_counter()
    ok, failed, latencies = await paced_load(
        port, upstream_port, rate=args.rate, duration=args.duration, connections=args.connections
    )
    cpu_after, wall = cpu_seconds(pid), time.perf_counter() - wall_before
    # p99 added: the proxied and the direct loads at once (`paired_load`), after the RSS run.
    (_, _, through), (_, _, direct) = await paired_load(
        port, upstream_port, rate=args.rate, duration=args.duration, connections=args.connections
    )
    sampling = False
    await sampler
    calls = ok + failed
    latencies.sort()
    return {
        "rss": peak["VmRSS"],
        "rss_anon": peak["RssAnon"],
        "cpu_us": (cpu_after - cpu_before) / calls * 1e6,
        "achieved": calls / wall,
        "ok": ok,
        "failed": failed,
        "p50_ms": latencies[len(latencies) // 2] * 1e3,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1e3,
        "cores": (cpu_after - cpu_before) / wall,
        "paired_p99_ms": p99(through),
        "direct_p99_ms": p99(direct),
    }


def own_time_ms(log: Path) -> tuple[float, float, int]:
    """(p50, p99, calls) of the time the proxy itself spent on each call of its decision lines:
    `latency_ms` less `upstream_ms` (the wait for the upstream's answer head). What the proxy
    adds, apart from the machine's scheduling of the load, the upstream and the proxy's wake-ups,
    which the round trip's p99 also carries."""
    own = []
    for line in log.read_bytes().splitlines():
        if b'"latency_ms"' in line:
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                own.append(record["latency_ms"] - (record.get("upstream_ms") or 0.0))
    own.sort()
    if not own:
        return float("nan"), float("nan"), 0
    return own[len(own) // 2], own[min(len(own) - 1, int(len(own) * 0.99))], len(own)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="requests/s (default 1000)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of load (default 5)")
    parser.add_argument("--connections", type=int, default=64, help="keep-alive connections")
    parser.add_argument(
        "--optimize",
        type=int,
        choices=(0, 2),
        default=2,
        help="the proxy's PYTHONOPTIMIZE: 2 as the injector and the chart run the sidecar"
        " (default), 0 as `make run` does",
    )
    parser.add_argument(
        "--tree",
        type=Path,
        help="run the proxy of another checkout (PYTHONPATH=DIR, e.g. a `git archive` of main"
        " with its native module built), for an A/B: alternate runs with and without it",
    )
    args = parser.parse_args()

    tree = args.tree.resolve() if args.tree else ROOT
    compile_bytecode(tree, optimize=args.optimize)
    optimized = {"PYTHONOPTIMIZE": str(args.optimize)} if args.optimize else {}
    upstream, upstream_port = start_upstream()
    with tempfile.TemporaryDirectory(prefix="bench-footprint-") as tmp:
        proc, port, ready = start_proxy(
            Path(tmp), upstream_port, env_extra={"PYTHONPATH": str(tree), **optimized}, cwd=tree
        )
        # The CPU the start took: what start to ready would be with a core to itself (the
        # start is one thread), whatever else the machine runs.
        ready_cpu = cpu_seconds(proc.pid)
        try:
            time.sleep(1.0)
            idle_memory = memory_mib(proc.pid)
            idle = idle_memory["VmRSS"]
            load = asyncio.run(measure_load(proc.pid, port, upstream_port, args))
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
            upstream.kill()
        own_p50, own_p99, own_calls = own_time_ms(Path(tmp) / "proxy.log")
    from sharewall.taxonomy import TAXONOMY_RELPATH, policy_dir

    floors = {
        "python + asyncio + ssl": floor_mib(_FLOOR_ASYNCIO, optimized),
        "  + regorus, policy, 1 eval": floor_mib(
            _FLOOR_REGO.format(root=str(policy_dir()), taxonomy=str(TAXONOMY_RELPATH)), optimized
        ),
    }

    rate = int(args.rate)
    print(
        f"sharewall proxy --mode report on {SAMPLE_REGISTRY.relative_to(ROOT)}, {HOST} pinned"
        f" (PYTHONOPTIMIZE={args.optimize}, bytecode compiled first, as in the image; tree {tree})"
    )
    print(
        f"load: {load['ok']} ok + {load['failed']} not ok in {args.duration:g} s at "
        f"{load['achieved']:.0f} req/s achieved ({args.connections} connections), "
        f"p50 {load['p50_ms']:.2f} ms, p99 {load['p99_ms']:.2f} ms round trip, "
        f"proxy CPU {load['cores']:.2f} cores"
    )
    added = load["paired_p99_ms"] - load["direct_p99_ms"]
    print(
        f"p99 added at {rate} req/s (proxied and direct loads at once, one run): through "
        f"{load['paired_p99_ms']:.2f} ms - direct {load['direct_p99_ms']:.2f} ms = {added:.2f} ms "
        f"(goal <= 2 ms, ratio {added / 2:.2f})"
    )
    print(
        f"the proxy's own time per call (its decision lines: latency_ms - upstream_ms, "
        f"{own_calls} calls): p50 {own_p50:.3f} ms, p99 {own_p99:.3f} ms"
    )
    rows = [
        ("idle", idle),
        ("ready", ready),
        ("ready_cpu", ready_cpu),
        ("load_rss", load["rss"]),
        ("cpu", load["cpu_us"]),
    ]
    print(f"{'':24s}{'measured':>10s}{'goal':>8s}  {'ratio':>6s}")
    for key, value in rows:
        label, goal, unit = GOALS[key]
        label = label.format(rate=rate)
        print(f"{label:24s}{value:>8.2f} {unit:<2s}{goal:>6g} {unit:<2s}{value / goal:>6.2f}")
    print()
    print("where the idle memory is (MiB)    VmRSS  RssAnon  RssFile      PSS")
    memory_rows = [("sharewall proxy, idle", idle_memory), *floors.items()]
    for label, m in memory_rows:
        print(
            f"{label:32s}{m['VmRSS']:>7.1f}{m['RssAnon']:>9.1f}{m['RssFile']:>9.1f}"
            f"{m.get('Pss', float('nan')):>9.1f}"
        )
    print(
        f"RssAnon under load: {load['rss_anon']:.1f} MiB (at the VmRSS peak); "
        f"sharewall's own share of idle VmRSS over the Rego floor: "
        f"{idle - floors['  + regorus, policy, 1 eval']['VmRSS']:.1f} MiB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
