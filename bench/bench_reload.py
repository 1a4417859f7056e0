"""Request latency while the proxy loads a new snapshot of a 10,000-recipient registry file.

    .venv/bin/python bench/bench_reload.py [--recipients 10000] [--rate 200] [--reloads 3]

Writes a registry file of `--recipients` recipients (one of them the benchmark upstream, the
rest fillers with an exact and a wildcard host each), starts `sharewall proxy --mode report` on
it with `--reload-interval 0.2`, and sends a paced load (1 KB JSON POST with a phone number,
the same request as `bench_footprint.py`) the whole time. First a quiet phase (no change), then
`--reloads` times: rewrite the file with one recipient renamed and keep the load going until the
proxy logs `snapshot.loaded` for the new revision. Prints the round-trip p50/p99/max of the
requests sent in the quiet phase and of those sent while a reload was under way (from the write
to the `snapshot.loaded` line), and the p99 added by reloading as a ratio to issue 10's goal
(no request waits more than 10 ms longer while a snapshot is loaded).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_footprint import _upstream, paced_load, start_proxy

HOST = "upstream.bench"
GOAL_MS = 10.0


def registry_yaml(recipients: int, generation: int) -> str:
    """The registry: the benchmark upstream and `recipients - 1` fillers; `generation` renames one."""
    lines = [
        "recipients:",
        "  - id: bench-upstream",
        "    name: Benchmark upstream",
        "    kind: ott_provider",
        "    status: approved",
        "    regions: [SG]",
        f"    hosts: [{HOST}]",
        "    grants:",
        "      - purpose: service_delivery",
        "        categories: [contact.phone_number, contact.name, comms.content]",
        "        legal_basis: contract",
    ]
    for i in range(1, recipients):
        name = f"Vendor {i}" + (f" (rev {generation})" if i == 1 else "")
        lines += [
            f"  - id: vendor-{i}",
            f"    name: {name}",
            "    kind: ott_provider",
            "    status: approved",
            "    regions: [SG]",
            f'    hosts: [api.vendor{i}.example.com, "*.v{i}.example.net"]',
            "    grants:",
            "      - purpose: service_delivery",
            "        categories: [contact.phone_number, comms.content]",
            "        legal_basis: contract",
        ]
    return "\n".join(lines) + "\n"


def loaded_count(log: Path) -> int:
    """How many `snapshot.loaded` lines the proxy has written so far."""
    count = 0
    for line in log.read_text(errors="replace").splitlines():
        try:
            if json.loads(line).get("event") == "snapshot.loaded":
                count += 1
        except ValueError:
            continue
    return count


def percentiles(values: list[float]) -> tuple[float, float, float]:
    """(p50, p99, max) in ms."""
    ordered = sorted(values)
    if not ordered:
        return (float("nan"),) * 3
    return (
        ordered[len(ordered) // 2] * 1e3,
        ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e3,
        ordered[-1] * 1e3,
    )


async def run(port: int, upstream_port: int, registry: Path, log: Path, args) -> None:
    quiet_sent: list[float] = []
    _, _, quiet = await paced_load(
        port,
        upstream_port,
        rate=args.rate,
        duration=args.quiet,
        connections=args.connections,
        host=HOST,
        sent_at=quiet_sent,
    )
    during: list[float] = []
    durations: list[float] = []
    for generation in range(1, args.reloads + 1):
        before = loaded_count(log)
        text = registry_yaml(args.recipients, generation)
        sent_at: list[float] = []
        stop = asyncio.Event()
        load = asyncio.create_task(
            paced_load(
                port,
                upstream_port,
                rate=args.rate,
                duration=args.timeout,
                connections=args.connections,
                host=HOST,
                sent_at=sent_at,
                stop=stop,
            )
        )
        await asyncio.sleep(0.5)
        tmp = registry.with_suffix(".tmp")
        tmp.write_text(text)
        written = time.monotonic()
        tmp.replace(registry)
        while loaded_count(log) == before:
            if load.done():
                raise RuntimeError(f"reload {generation} not seen in {args.timeout} s")
            await asyncio.sleep(0.05)
        done = time.monotonic()
        durations.append(done - written)
        stop.set()
        _, _, latencies = await load
        during += [lat for lat, at in zip(latencies, sent_at, strict=True) if written <= at <= done]
    q50, q99, qmax = percentiles(quiet)
    r50, r99, rmax = percentiles(during)
    print(
        f"{args.recipients} recipients, {args.rate:g} req/s paced over {args.connections} "
        f"connections, {args.reloads} reloads (write to snapshot.loaded: "
        + ", ".join(f"{d:.2f} s" for d in durations)
        + ")"
    )
    print(f"{'':28s}{'calls':>7s}{'p50 ms':>9s}{'p99 ms':>9s}{'max ms':>9s}")
    print(f"{'quiet (baseline)':28s}{len(quiet):>7d}{q50:>9.2f}{q99:>9.2f}{qmax:>9.2f}")
    print(f"{'while reloading':28s}{len(during):>7d}{r50:>9.2f}{r99:>9.2f}{rmax:>9.2f}")
    added = r99 - q99
    print(
        f"p99 added by reloading: {added:.2f} ms, goal {GOAL_MS:g} ms, ratio {added / GOAL_MS:.2f}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipients", type=int, default=10000)
    parser.add_argument("--rate", type=float, default=200.0, help="requests/s (default 200)")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--quiet", type=float, default=5.0, help="seconds without reloads")
    parser.add_argument("--reloads", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=120.0, help="longest wait per reload")
    args = parser.parse_args()

    parent, child = multiprocessing.Pipe()
    upstream = multiprocessing.Process(target=_upstream, args=(child,), daemon=True)
    upstream.start()
    upstream_port = parent.recv()
    with tempfile.TemporaryDirectory(prefix="bench-reload-") as tmp:
        work = Path(tmp)
        registry = work / "registry.yaml"
        registry.write_text(registry_yaml(args.recipients, 0))
        proc, port, ready = start_proxy(
            work,
            upstream_port,
            registry=registry,
            host=HOST,
            extra=("--reload-interval", "0.2"),
        )
        print(f"start to ready on {args.recipients} recipients: {ready:.2f} s")
        try:
            asyncio.run(run(port, upstream_port, registry, work / "proxy.log", args))
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
            upstream.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
