"""How long the event loop's thread waits for the GIL while a worker thread inspects a big body.

    .venv/bin/python bench/bench_gil_wait.py [--seconds 4] [--rounds 2]

The proxy inspects bodies over 64 KiB in a worker thread (`proxy.pipeline`) so that one big
payload does not stall the loop; but the thread holds the GIL while it inspects, and a thread
waking for I/O (the loop) gets it back only when the holder blocks or is asked to let go, after
`sys.getswitchinterval()`. Here a thread inspects a ~300 KB JSON body (`inspect_call`, as the
proxy does) over and over while this thread wakes every 1 ms, as the loop does for calls, and
measures, for each wake-up, the time it was neither on a CPU nor waiting for one (from
`/proc/self/task/TID/schedstat`: the GIL wait, free of the machine's load), at CPython's
default interval (5 ms) and at the proxy's (`proxy.app.GIL_SWITCH_SECONDS`), against no
thread at all, alternated `--rounds` times.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_gc_pauses import big_body  # noqa: E402

from proxy.app import GIL_SWITCH_SECONDS  # noqa: E402
from proxy.inspect import inspect_call  # noqa: E402

HEADERS = [("content-type", "application/json")]


def gil_waits(seconds: float, interval: float, with_thread: bool, body: bytes) -> list[float]:
    """The blocked time (s) of each 1 ms wake-up of this thread over `seconds`."""
    sys.setswitchinterval(interval)
    fd = os.open(f"/proc/self/task/{threading.get_native_id()}/schedstat", os.O_RDONLY)
    stop = threading.Event()

    def work() -> None:
        while not stop.is_set():
            inspect_call("POST", "http://x/y", HEADERS, body)

    worker = threading.Thread(target=work) if with_thread else None
    if worker is not None:
        worker.start()
    waits: list[float] = []
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            queued0 = int(os.pread(fd, 100, 0).split()[1])
            t0 = time.monotonic()
            time.sleep(0.001)
            late = time.monotonic() - t0 - 0.001
            queued = (int(os.pread(fd, 100, 0).split()[1]) - queued0) / 1e9
            waits.append(max(0.0, late - queued))
            sum(range(200))  # a little work after each wake, as a loop iteration does
    finally:
        stop.set()
        if worker is not None:
            worker.join()
        os.close(fd)
    return waits


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    body = big_body()
    t0 = time.thread_time()
    inspect_call("POST", "http://x/y", HEADERS, body)
    print(
        f"one inspection of {len(body) / 1024:.0f} KiB: {(time.thread_time() - t0) * 1e3:.1f} ms "
        f"CPU; os.getloadavg() {os.getloadavg()[0]:.1f}"
    )
    print(f"{'':34s}{'wake-ups':>9s}{'p50 ms':>8s}{'p99 ms':>8s}{'max ms':>8s}{'sum s':>7s}")
    cases = [
        ("no worker thread", 0.005, False),
        ("inspecting thread, 5 ms (default)", 0.005, True),
        (f"inspecting thread, {GIL_SWITCH_SECONDS * 1e3:g} ms (proxy)", GIL_SWITCH_SECONDS, True),
    ]
    for _ in range(args.rounds):
        for label, interval, with_thread in cases:
            w = sorted(gil_waits(args.seconds, interval, with_thread, body))
            print(
                f"{label:34s}{len(w):>9d}{w[len(w) // 2] * 1e3:>8.2f}"
                f"{w[int(len(w) * 0.99)] * 1e3:>8.2f}{w[-1] * 1e3:>8.2f}{sum(w):>7.2f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
