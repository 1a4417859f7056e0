"""The proxy's garbage-collection pauses under a paced load (issue 10's p99 at 1,000 req/s).

    .venv/bin/python bench/bench_gc_pauses.py [--rate 1000] [--duration 5] [--tree DIR ...]

Runs `bench_footprint.py`'s proxy (report mode, sample registry, 1 KB JSON with a phone
number, plain upstream) with a `gc.callbacks` hook loaded through `sitecustomize`: each
collection's generation, wall time and thread CPU time (the CPU time does not grow with the
machine's load; the wall time does). Prints, for the paced load only (after a 1 s warm-up),
the collections per generation and the longest pause, the round-trip p50/p99, and, measured
in the proxy after the load, what one forced full collection costs (`gc.collect()` of the
heap as it is then, frozen objects excluded). `--tree DIR` (repeatable) runs the proxy from
another checkout (`PYTHONPATH=DIR`, e.g. `git archive <commit> | tar -x -C DIR`; copy the
built `proxy/inspect/_native*.so` into it), alternated `--rounds` times: an A/B in one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_footprint import (  # noqa: E402
    HOST,
    PURPOSE,
    _read_response,
    paced_load,
    start_proxy,
    start_upstream,
)


def big_body(records: int = 2500) -> bytes:
    """~300 KB of JSON records, a phone number in every 50th: inspected in a worker thread."""
    items = [
        {
            "name": f"user{i}",
            "note": "lorem ipsum dolor sit amet " * 3,
            "phone": "+6591234567" if i % 50 == 0 else "n/a",
        }
        for i in range(records)
    ]
    return json.dumps({"items": items}, separators=(",", ":")).encode()


async def big_calls(port: int, upstream_port: int, every: float, duration: float) -> int:
    """One big inspected POST every `every` s on its own connection; how many were answered."""
    body = big_body()
    request = (
        f"POST http://{HOST}:{upstream_port}/v1/import HTTP/1.1\r\n"
        f"Host: {HOST}:{upstream_port}\r\nX-Sharewall-Purpose: {PURPOSE}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answered = 0
    end = time.monotonic() + duration
    try:
        while time.monotonic() < end:
            writer.write(request)
            await _read_response(reader)
            answered += 1
            await asyncio.sleep(every)
    finally:
        writer.close()
    return answered


# Loaded by the proxy's interpreter at start (a directory on PYTHONPATH holding it).
_HOOK = """
import atexit, gc, json, os, signal, time

_out = os.environ["BENCH_GC_OUT"]
_started = [0.0, 0]
_pauses = []


_young = []


def _callback(phase, info):
    if (phase == "start" and os.environ.get("BENCH_YOUNG") == "1" and info["generation"] == 0
            and _window[0] <= time.monotonic() and len(_young) < 3):
        objs = gc.get_objects(0)
        kinds = {}
        refs = 0
        for o in objs:
            name = type(o).__name__
            kinds[name] = kinds.get(name, 0) + 1
            refs += len(gc.get_referents(o))
        top = sorted(kinds.items(), key=lambda x: -x[1])[:12]
        _young.append({"objects": len(objs), "referents": refs, "top": top})
        del objs
    if phase == "start":
        _started[0], _started[1] = time.perf_counter(), time.thread_time_ns()
    else:
        _pauses.append(
            (
                info["generation"],
                (time.perf_counter() - _started[0]) * 1e3,
                (time.thread_time_ns() - _started[1]) / 1e6,
                time.monotonic(),
            )
        )


def _forced(*_args):
    t0, c0 = time.perf_counter(), time.thread_time_ns()
    gc.collect()
    _pauses.append((-1, (time.perf_counter() - t0) * 1e3, (time.thread_time_ns() - c0) / 1e6,
                    time.monotonic()))


# The loop-lag probe: a callback every 1 ms on the proxy's loop records how late it ran; a
# watchdog thread (BENCH_STACKS=1) samples the loop thread's stack while it is 3 ms late having
# run 2 ms of CPU since its last tick (busy, not merely descheduled).
_lags = []
_stalls = {}
_threads = {}
_window = [1e18, 1e18]  # set by SIGUSR2 (begin) and SIGUSR1 (end)


def _thread_cpu():
    import threading
    names = {t.native_id: t.name for t in threading.enumerate()}
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        name = names.get(int(tid), "?")
        name = "main" if int(tid) == os.getpid() else name.split(" (")[0]
        out[f"{name}"] = out.get(name, 0) + int(fields[11]) + int(fields[12])
    return out


def _begin(*_args):
    _window[0] = time.monotonic()
    _threads["begin"] = _thread_cpu()


def _probe(loop):
    import sys, threading
    last = [time.monotonic()]
    main_id = threading.get_ident()

    cpu = [time.thread_time()]
    # The loop thread's schedstat: CPU ns, run-queue wait ns. Wall time that is neither is time
    # it was blocked off the CPU: waiting for the GIL, or in a blocking call (a full stdout).
    sched = os.open(f"/proc/self/task/{threading.get_native_id()}/schedstat", os.O_RDONLY)

    def schedstat():
        run, wait = os.pread(sched, 100, 0).split()[:2]
        return int(run) / 1e9, int(wait) / 1e9

    prev = [time.monotonic(), *schedstat()]

    def tick(expected):
        now, now_cpu = time.monotonic(), time.thread_time()
        run, wait = schedstat()
        last[0] = now
        if _window[0] <= now <= _window[1]:
            # How late, the loop thread's CPU since the last tick (load-independent), and the
            # time it spent blocked (neither on a CPU nor waiting for one).
            blocked = (now - prev[0]) - (run - prev[1]) - (wait - prev[2])
            _lags.append((now - expected, now_cpu - cpu[0], max(0.0, blocked - 0.001)))
        cpu[0] = now_cpu
        prev[:] = [now, run, wait]
        loop.call_at(now + 0.001, tick, now + 0.001)

    loop.call_soon(tick, time.monotonic())
    if os.environ.get("BENCH_STACKS") != "1":
        return

    main_clock = time.pthread_getcpuclockid(main_id)

    def watch():
        while True:
            time.sleep(0.001)
            # Late by 3 ms and 2 ms of it on the loop thread's CPU: busy, not just descheduled.
            busy = time.clock_gettime(main_clock) - cpu[0] > 0.002
            if busy and time.monotonic() - last[0] > 0.003 and _window[0] <= last[0] <= _window[1]:
                frame = sys._current_frames().get(main_id)
                where = []
                while frame is not None and len(where) < 4:
                    code = frame.f_code
                    where.append(f"{code.co_filename.rsplit('/', 2)[-1]}:{frame.f_lineno}:{code.co_name}")
                    frame = frame.f_back
                key = " < ".join(where)
                _stalls[key] = _stalls.get(key, 0) + 1

    threading.Thread(target=watch, daemon=True, name="bench-watchdog").start()


def _patch_runner():
    import asyncio.runners
    run = asyncio.runners.Runner.run

    def patched(self, coro, **kw):
        async def probed():
            _probe(asyncio.get_running_loop())
            return await coro
        return run(self, probed(), **kw)

    asyncio.runners.Runner.run = patched


def _end():
    _window[1] = time.monotonic()
    _threads["end"] = _thread_cpu()


def _dump():
    with open(_out, "w") as f:
        json.dump({"pauses": _pauses, "frozen": gc.get_freeze_count(), "lags": _lags,
                   "stalls": _stalls, "threads": _threads, "young": _young, "ticks": os.sysconf("SC_CLK_TCK")}, f)


def _forced_at_end(*args):
    _end()
    _forced(*args)


gc.callbacks.append(_callback)
signal.signal(signal.SIGUSR1, _forced_at_end)  # a Python-level handler: runs between bytecodes
signal.signal(signal.SIGUSR2, _begin)
_patch_runner()
atexit.register(_dump)
"""


def start(
    work: Path, tree: Path, upstream_port: int, stacks: bool = False
) -> tuple[subprocess.Popen[bytes], int]:
    """bench_footprint's proxy, run from `tree` with the GC hook on its path."""
    hook = work / "hook"
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(_HOOK)
    # cwd is the work dir: `-m` puts the cwd first on sys.path, ahead of PYTHONPATH's tree.
    proc, port, _ready_s = start_proxy(
        work,
        upstream_port,
        env_extra={
            "PYTHONPATH": f"{hook}:{tree}",
            "BENCH_GC_OUT": str(work / "gc.json"),
            "BENCH_STACKS": "1" if stacks else "0",
            "BENCH_YOUNG": os.environ.get("BENCH_YOUNG", "0"),
        },
        cwd=work,
    )
    return proc, port


def measure(tree: Path, upstream_port: int, args: argparse.Namespace) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-gc-") as tmp:
        work = Path(tmp)
        proc, port = start(work, tree, upstream_port, args.stacks)
        try:
            asyncio.run(
                paced_load(port, upstream_port, rate=args.rate, duration=1.0, connections=64)
            )
            proc.send_signal(signal.SIGUSR2)
            begin = time.monotonic()

            async def load() -> tuple[int, int, list[float]]:
                paced = paced_load(
                    port, upstream_port, rate=args.rate, duration=args.duration, connections=64
                )
                if not args.big_every:
                    return await paced
                result, big = await asyncio.gather(
                    paced, big_calls(port, upstream_port, args.big_every, args.duration)
                )
                out_big.append(big)
                return result

            out_big: list[int] = []
            ok, failed, latencies = asyncio.run(load())
            end = time.monotonic()
            proc.send_signal(signal.SIGUSR1)
            time.sleep(0.5)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        data = json.loads((work / "gc.json").read_text())
    for young in data.get("young", []):
        print(f"  young generation at a gen0 collection: {young}")
    during = [p for p in data["pauses"] if begin <= p[3] <= end and p[0] >= 0]
    forced = [p for p in data["pauses"] if p[0] == -1]
    latencies.sort()
    out: dict[str, float] = {
        "calls": ok + failed,
        "p50_ms": latencies[len(latencies) // 2] * 1e3,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1e3,
        "frozen": data["frozen"],
        "forced_ms": forced[0][1] if forced else float("nan"),
        "forced_cpu_ms": forced[0][2] if forced else float("nan"),
        "big_calls": out_big[0] if out_big else 0,
    }
    stretches = sorted(x[1] for x in data["lags"])
    out["cpu_stretch_p99_ms"] = stretches[int(len(stretches) * 0.99)] * 1e3 if stretches else 0.0
    out["cpu_stretch_max_ms"] = stretches[-1] * 1e3 if stretches else 0.0
    out["cpu_stretches_over_1"] = sum(1 for x in stretches if x > 1e-3)
    blocked = sorted(x[2] for x in data["lags"])
    out["blocked_p99_ms"] = blocked[int(len(blocked) * 0.99)] * 1e3 if blocked else 0.0
    out["blocked_max_ms"] = blocked[-1] * 1e3 if blocked else 0.0
    out["blocked_total_ms"] = sum(blocked) * 1e3
    lags = sorted(x[0] for x in data["lags"])
    out["lag_p99_ms"] = lags[int(len(lags) * 0.99)] * 1e3 if lags else float("nan")
    out["lag_max_ms"] = lags[-1] * 1e3 if lags else float("nan")
    for ms in (2, 5, 10):
        out[f"lags_over_{ms}"] = sum(1 for x in lags if x > ms / 1e3)
    begin_cpu, end_cpu = data["threads"].get("begin", {}), data["threads"].get("end", {})
    ticks = data["ticks"]
    calls = max(1, ok + failed)
    out["threads"] = {  # type: ignore[assignment]
        name: (end_cpu[name] - begin_cpu.get(name, 0)) / ticks * 1e6 / calls
        for name in end_cpu
        if end_cpu[name] - begin_cpu.get(name, 0) > 0
    }
    out["stalls"] = data["stalls"]  # type: ignore[assignment]
    for gen in (0, 1, 2):
        mine = [p for p in during if p[0] == gen]
        out[f"n{gen}"] = len(mine)
        out[f"max{gen}_ms"] = max((p[1] for p in mine), default=0.0)
        out[f"max{gen}_cpu_ms"] = max((p[2] for p in mine), default=0.0)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--tree", type=Path, action="append", default=[])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--big-every",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="also send a ~300 KB JSON call (inspected in a worker thread) every SECONDS",
    )
    parser.add_argument(
        "--stacks",
        action="store_true",
        help="sample the loop thread's stack while the loop is 3 ms late (a watchdog thread)",
    )
    args = parser.parse_args()
    trees = args.tree or [ROOT]
    upstream, upstream_port = start_upstream()
    print(
        f"paced {args.rate:g} req/s for {args.duration:g} s, 64 connections, after a 1 s warm-up;"
        " pauses during the load only; ms wall (thread CPU)"
    )
    try:
        for r in range(args.rounds):
            for tree in trees:
                m = measure(tree, upstream_port, args)
                gens = "  ".join(
                    f"gen{g} {m[f'n{g}']:.0f}x max {m[f'max{g}_ms']:.2f} "
                    f"({m[f'max{g}_cpu_ms']:.2f})"
                    for g in (0, 1, 2)
                )
                print(
                    f"round {r + 1} {tree}: {m['calls']:.0f} calls (+{m['big_calls']:.0f} big), p50 {m['p50_ms']:.2f} ms, "
                    f"p99 {m['p99_ms']:.2f} ms; {gens}; forced full collection "
                    f"{m['forced_ms']:.2f} ({m['forced_cpu_ms']:.2f}) ms, "
                    f"{m['frozen']:.0f} objects frozen"
                )
                print(
                    f"  loop lag (1 ms probe): p99 {m['lag_p99_ms']:.2f} ms, max "
                    f"{m['lag_max_ms']:.1f} ms, late > 2/5/10 ms: {m['lags_over_2']:.0f}/"
                    f"{m['lags_over_5']:.0f}/{m['lags_over_10']:.0f}; loop thread CPU between "
                    f"ticks p99 {m['cpu_stretch_p99_ms']:.2f} ms, max {m['cpu_stretch_max_ms']:.2f}"
                    f" ms, > 1 ms {m['cpu_stretches_over_1']:.0f}x; blocked off the CPU between "
                    f"ticks (GIL, blocking calls) p99 {m['blocked_p99_ms']:.2f} ms, max "
                    f"{m['blocked_max_ms']:.1f} ms, total {m['blocked_total_ms']:.0f} ms; "
                    "CPU us per call by thread: "
                    + ", ".join(f"{k} {v:.0f}" for k, v in sorted(m["threads"].items()))  # type: ignore[attr-defined]
                )
                for where, n in sorted(m["stalls"].items(), key=lambda x: -x[1])[:8]:  # type: ignore[attr-defined]
                    print(f"  stalled {n:4d}x at {where}")
    finally:
        upstream.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
