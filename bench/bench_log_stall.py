"""What a stalled stdout reader does to the proxy (its lines wait in a bounded buffer, then calls are refused).

    .venv/bin/python bench/bench_log_stall.py [--rate 1000] [--stall 2]

`bench_footprint.py`'s proxy and paced load (report mode, 1 KB JSON with a phone number, 64
connections), its stdout a pipe read by this script, which stops reading for `--stall` seconds
in the middle of a load of max(4, stall + 2) s (as a log collector that stalls would). Prints the round-trip
p50/p99/max of the calls, the calls answered during the stall, how long `/readyz` took 0.5 s
into it and what it said (and 0.5 s before its end), the calls not answered 200 (refused 503
`log_unavailable` once the log buffer is full), and the decision lines read back (each id once),
against a run where the reader never stops.
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
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_footprint import HOST, PURPOSE, ROOT, SAMPLE_REGISTRY, paced_load, start_upstream


def start(work: Path, upstream_port: int) -> tuple[subprocess.Popen[bytes], int, int]:
    port_file = work / "ports.json"
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    cmd = [
        sys.executable, "-m", "sharewall.cli", "proxy",
        "--registry-file", str(SAMPLE_REGISTRY), "--mode", "report",
        "--default-purpose", PURPOSE, "--listen", "127.0.0.1:0",
        "--admin-listen", "127.0.0.1:0", "--port-file", str(port_file),
        "--spool-dir", str(work / "spool"), "--resolve", f"{HOST}:{upstream_port}:127.0.0.1",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, cwd=ROOT, env=env)
    deadline = time.monotonic() + 60
    while not port_file.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("proxy did not start")
        time.sleep(0.01)
    time.sleep(0.05)
    ports = json.loads(port_file.read_text())
    return proc, ports["listen"][1], ports["admin"][1]


def run(upstream_port: int, rate: float, stall: float, window_s: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-logstall-") as tmp:
        proc, port, admin = start(Path(tmp), upstream_port)
        reading = threading.Event()
        reading.set()

        out: list[bytes] = []

        def reader() -> None:
            assert proc.stdout is not None
            while True:
                reading.wait()
                chunk = proc.stdout.read1(65536)
                if not chunk:
                    return
                out.append(chunk)

        reader_thread = threading.Thread(target=reader, daemon=True)
        reader_thread.start()
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        ready_ms: list[float] = []
        ready_status: list[int] = []

        def probe() -> None:
            t0 = time.perf_counter()
            try:
                with opener.open(f"http://127.0.0.1:{admin}/readyz", timeout=30) as resp:
                    ready_status.append(resp.status)
            except urllib.error.HTTPError as exc:
                ready_status.append(exc.code)
            except OSError:
                pass
            ready_ms.append((time.perf_counter() - t0) * 1e3)

        def stall_then_resume() -> None:
            time.sleep(1.0)
            if stall:
                reading.clear()
            time.sleep(0.5)
            probers = [threading.Thread(target=probe)]
            probers[0].start()
            if stall > 1.5:  # and once more near the end of the stall
                time.sleep(stall - 1.0)
                probers.append(threading.Thread(target=probe))
                probers[1].start()
                time.sleep(0.5)
            else:
                time.sleep(max(0.0, stall - 0.5))
            reading.set()
            for prober in probers:
                prober.join()

        try:
            asyncio.run(paced_load(port, upstream_port, rate=rate, duration=0.5, connections=64))
            sent_at: list[float] = []
            staller = threading.Thread(target=stall_then_resume)
            t_start = time.monotonic()
            staller.start()
            ok, failed, lat = asyncio.run(
                paced_load(
                    port,
                    upstream_port,
                    rate=rate,
                    duration=max(4.0, stall + 2.0),
                    connections=64,
                    sent_at=sent_at,
                )
            )
            staller.join()
        finally:
            reading.set()
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
            reader_thread.join(10)
    decisions = [
        json.loads(line)
        for line in b"".join(out).splitlines()
        if line.startswith(b"{") and b'"egress.decision"' in line
    ]
    ids = [d["decision_id"] for d in decisions]
    refused = sum(1 for d in decisions if d.get("fault") == "log_unavailable")
    window = (t_start + 1.0, t_start + 1.0 + window_s)
    answered = sum(1 for s, d in zip(sent_at, lat, strict=True) if window[0] <= s + d <= window[1])
    lat.sort()
    return {
        "calls": ok + failed,
        "p50": lat[len(lat) // 2] * 1e3,
        "p99": lat[int(len(lat) * 0.99)] * 1e3,
        "max": lat[-1] * 1e3,
        "answered_in_stall": answered,
        "readyz_ms": ready_ms[0] if ready_ms else float("nan"),
        "readyz_status": ready_status[0] if ready_status else 0,
        "readyz_late": ready_status[1] if len(ready_status) > 1 else 0,
        "failed": failed,
        "lines": len(ids),
        "unique": len(set(ids)),
        "refused_lines": refused,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--stall", type=float, default=2.0)
    args = parser.parse_args()
    upstream, upstream_port = start_upstream()
    try:
        for label, stall in (
            ("reader never stops", 0.0),
            (f"reader stops {args.stall:g} s", args.stall),
        ):
            m = run(upstream_port, args.rate, stall, args.stall)
            print(
                f"{label:22s} {m['calls']:.0f} calls at {args.rate:g}/s: p50 {m['p50']:.2f} ms, "
                f"p99 {m['p99']:.1f} ms, max {m['max']:.0f} ms; answered in the {args.stall:g} s window "
                f"{m['answered_in_stall']:.0f}; /readyz sent 0.5 s in took {m['readyz_ms']:.0f} ms "
                f"({m['readyz_status']}; 0.5 s before the end: {m['readyz_late']})"
            )
            print(
                f"{'':22s} not 200: {m['failed']:.0f}; decision lines {m['lines']:.0f} "
                f"({m['unique']:.0f} distinct ids, {m['refused_lines']:.0f} log_unavailable) "
                f"for {m['calls']:.0f} calls + warm-up"
            )
    finally:
        upstream.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
