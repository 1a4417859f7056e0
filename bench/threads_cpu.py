"""CPU per proxied call of each of the proxy's threads under wrk load, trees alternated.

    .venv/bin/python bench/threads_cpu.py [--tree DIR ...] [--rounds 3] [--duration 8]

`bench_proxy.py`'s report-mode load (wrk -t2 -c16, its 1 KB JSON POST with a phone number,
its plain upstream in its own process) against `sharewall proxy --mode report`, stdout a
regular file as in `bench_proxy.py` (`--stdout pipe`: a pipe this script reads). After a
warm-up, reads each thread's utime/stime (`/proc/PID/task/TID/stat`), run time
(`schedstat`, ns) and context switches (`status`) before and after the run, and prints them per
call, grouped by thread: the event loop, the stdout log writer, the asyncio executor (the
spool's writes), the rest. The threads are told apart by name: the proxy runs under a launcher
that gives each Python thread its name as the OS thread's name (`prctl(PR_SET_NAME)`); the
proxy's code is not changed.

`--tree DIR` (repeatable): the proxy runs with `PYTHONPATH=DIR` (a `git archive` of another
revision with its native module built), alternated `--rounds` times; medians are printed at
the end. The machine's load moves these figures (wall clock and scheduling): alternate.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from bench_proxy import (  # noqa: E402
    REPORT,
    UPSTREAM_HOST,
    Contender,
    payload,
    report_proxy_args,
    start_upstream,
    wait_proxy_ready,
    wrk_script,
)

# Names each Python thread's OS thread after it (15 bytes), then runs the proxy's CLI.
_LAUNCH = """
import ctypes, sys, threading
_libc = ctypes.CDLL(None)
_start = threading.Thread._bootstrap_inner
def _named(self):
    _libc.prctl(15, self.name.encode()[:15], 0, 0, 0)
    _start(self)
threading.Thread._bootstrap_inner = _named
from sharewall.cli import main
sys.argv[0] = 'sharewall'
sys.exit(main())
"""

GROUPS = ("loop", "log writer", "executor", "other")


def _group(tid: int, pid: int, name: str) -> str:
    if tid == pid:
        return "loop"
    if name.startswith("sharewall-log"):
        return "log writer"
    if name.startswith(("asyncio", "uvloop", "ThreadPoolExec")):
        return "executor"
    return "other"


def thread_stats(pid: int) -> dict[int, tuple[str, list[float]]]:
    """Per thread: name, [utime s, stime s, run ns, voluntary, involuntary switches]."""
    tick = os.sysconf("SC_CLK_TCK")
    found = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
            schedstat = (task / "schedstat").read_text().split()
            status = (task / "status").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat.rsplit(")", 1)[1].split()
        vol = int(re.search(r"^voluntary_ctxt_switches:\s+(\d+)", status, re.M).group(1))
        invol = int(re.search(r"^nonvoluntary_ctxt_switches:\s+(\d+)", status, re.M).group(1))
        found[int(task.name)] = (
            name,
            [int(fields[11]) / tick, int(fields[12]) / tick, int(schedstat[0]), vol, invol],
        )
    return found


def run_wrk(port: int, script: Path, seconds: int) -> int:
    cmd = ["wrk", "-t2", "-c16", f"-d{seconds}s", "-s", str(script), f"http://127.0.0.1:{port}"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in out:
        raise RuntimeError(f"wrk saw failures:\n{out}")
    return int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]


def measure(
    tree: Path | None, work: Path, upstream_port: int, args: argparse.Namespace
) -> dict[str, list[float]]:
    """Per thread group: [user us, sys us, run us, voluntary, involuntary] per call."""
    tag = tree.name if tree else "current"
    run = Path(tempfile.mkdtemp(prefix=f"threads-{tag}-", dir=work))
    port_file = run / "ports.json"
    env = dict(os.environ, PYTHONPATH=str(tree or ROOT))
    cmd = [
        sys.executable,
        "-c",
        _LAUNCH,
        *report_proxy_args(run, upstream_port),
    ]
    reader = None
    if args.stdout == "pipe":
        read_end, write_end = os.pipe()
        process = subprocess.Popen(
            cmd, stdout=write_end, stderr=subprocess.STDOUT, env=env, cwd=run
        )
        os.close(write_end)

        def drain() -> None:
            with open(run / "proxy.log", "wb") as out:
                while chunk := os.read(read_end, 1 << 16):
                    out.write(chunk)
            os.close(read_end)

        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
    else:
        log = open(run / "proxy.log", "wb")  # noqa: SIM115 - lives with the process
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=run)
        log.close()
    script = run / "load.lua"
    target = f"{UPSTREAM_HOST}:{upstream_port}"
    load = Contender(REPORT, None, f"http://{target}/v1/messages", target)
    script.write_text(wrk_script(load, payload()))
    try:
        bound = wait_proxy_ready(port_file, 60)
        port = bound["listen"][1]
        run_wrk(port, script, args.warmup)
        before = thread_stats(process.pid)
        calls = run_wrk(port, script, args.duration)
        after = thread_stats(process.pid)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if reader is not None:
            reader.join(timeout=10)
    sums = {group: [0.0] * 5 for group in GROUPS}
    others = set()
    for tid, (name, end) in after.items():
        start = before.get(tid, (name, [0.0] * 5))[1]
        group = _group(tid, process.pid, name)
        if group == "other":
            others.add(name)
        total = sums[group]
        for i, (a, b) in enumerate(zip(start, end, strict=True)):
            total[i] += b - a
    per_call = {}
    for group, (user, system, run_ns, vol, invol) in sums.items():
        per_call[group] = [
            user * 1e6 / calls,
            system * 1e6 / calls,
            run_ns / 1e3 / calls,
            vol / calls,
            invol / calls,
        ]
    per_call["all"] = [sum(per_call[group][i] for group in GROUPS) for i in range(5)]
    per_call["calls/s"] = [calls / args.duration]
    if args.verbose:
        print(f"    other threads: {sorted(others)}")
    return per_call


def show(name: str, figures: dict[str, list[float]]) -> None:
    print(f"  {name}: {figures['calls/s'][0]:,.0f} calls/s", flush=True)
    for group in GROUPS:
        f = figures[group]
        print(
            f"    {group:<10} user {f[0]:6.2f}  sys {f[1]:6.2f}  run {f[2]:6.2f} us/call  "
            f"vcsw {f[3]:5.3f}  ivcsw {f[4]:5.3f} /call",
            flush=True,
        )
    total = figures["all"]
    print(
        f"    {'all':<10} user {total[0]:6.2f}  sys {total[1]:6.2f}  run {total[2]:6.2f} us/call  "
        f"vcsw {total[3]:5.3f}  ivcsw {total[4]:5.3f} /call",
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, action="append", default=[])
    parser.add_argument("--rounds", type=int, default=1, help="runs per tree, alternated")
    parser.add_argument("--duration", type=int, default=8, help="seconds of measured load")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of load before it")
    parser.add_argument("--verbose", action="store_true", help="name the other threads")
    parser.add_argument("--stdout", choices=("file", "pipe"), default="file")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("skip threads_cpu: wrk is not installed (apt-get install -y wrk)")
        return 0
    work = Path(tempfile.mkdtemp(prefix="sharewall-threads-"))
    upstream, ports = start_upstream(work)
    trees: list[Path | None] = list(args.tree) or [None]
    runs: dict[str, list[dict[str, list[float]]]] = {}
    try:
        plain = ports["plain"]
        print(f"wrk -t2 -c16 -d{args.duration}s, report mode, stdout a {args.stdout}; work {work}")
        for round_no in range(args.rounds):
            for tree in trees:
                name = f"round {round_no + 1} {tree or 'current tree'}"
                figures = measure(tree, work, plain, args)
                runs.setdefault(str(tree or "current tree"), []).append(figures)
                show(name, figures)
    finally:
        upstream.send_signal(signal.SIGTERM)
        upstream.wait(timeout=10)
    print("\nmedians (the `all` row: the median of each run's sum):")
    for name, figures in runs.items():
        median = {
            key: [statistics.median(f[key][i] for f in figures) for i in range(len(value))]
            for key, value in figures[0].items()
        }
        show(name, median)
    return 0


if __name__ == "__main__":
    sys.exit(main())
