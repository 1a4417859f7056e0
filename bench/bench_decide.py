"""Decision latency: `Decider.decide()` on the embedded engine with a cold and a warm cache
(and on OPA when an `opa` binary is on PATH). Prints µs/decision (mean, p50, p99).

    .venv/bin/python bench/bench_decide.py [--rounds N]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from proxy.decide import Decider  # noqa: E402
from proxy.decision import Call, Decision, new_decision_id  # noqa: E402
from proxy.engines import PolicyEngine, create_engine  # noqa: E402
from proxy.inspect.model import Finding, Inspection  # noqa: E402
from sharewall.registry_file import load_registry_file  # noqa: E402
from sharewall.snapshot import Snapshot  # noqa: E402
from sharewall.taxonomy import load_taxonomy, policy_dir  # noqa: E402

GOAL_WARM_US = 5.0


def sample_calls(snapshot: Snapshot) -> list[tuple[Call, Inspection]]:
    """A mix of calls: every recipient, a few purposes, a few category sets (allow and deny)."""
    purposes = ["service_delivery", "marketing", "troubleshooting", "customer_support"]
    category_sets = [
        ("contact.phone_number", "comms.content"),
        ("contact.email",),
        ("contact.phone_number", "mobile.sms_consent"),
        (),
    ]
    calls = []
    for recipient, purpose, categories in itertools.product(
        snapshot.recipients, purposes, category_sets
    ):
        call = Call(
            method="POST",
            scheme="https",
            host=recipient.hosts[0] if recipient.hosts else "example.com",
            port=443,
            path="/v1/messages",
            inspected=True,
            tls_upstream=True,
            recipient_id=recipient.id,
            purpose=purpose,
            source_workload="sms-gateway",
            source_namespace="messaging",
        )
        findings = tuple(Finding(c, f"json:$.f{i}", "bench") for i, c in enumerate(categories))
        calls.append((call, Inspection(findings=findings)))
    return calls


def load_snapshot() -> Snapshot:
    sample = ROOT / "examples" / "registry.yaml"
    return load_registry_file(sample)


def summary(samples_ns: list[int]) -> dict[str, float]:
    us = sorted(s / 1000 for s in samples_ns)
    return {
        "mean": statistics.fmean(us),
        "p50": us[len(us) // 2],
        "p99": us[min(len(us) - 1, int(len(us) * 0.99))],
        "n": len(us),
    }


async def measure(decider: Decider, calls: list[tuple[Call, Inspection]], rounds: int) -> list[int]:
    samples = []
    clock = time.perf_counter_ns
    for _ in range(rounds):
        for call, inspection in calls:
            started = clock()
            decision = await decider.decide(call, inspection)
            samples.append(clock() - started)
            if decision.fault is not None:
                raise SystemExit(f"engine fault during the benchmark: {decision.fault}")
    return samples


async def bench_engine(engine: PolicyEngine, label: str, rounds: int) -> dict[str, dict]:
    snapshot = load_snapshot()
    calls = sample_calls(snapshot)
    results = {}
    try:
        cold = Decider(engine, cache_size=0)  # every decision goes to the engine
        await cold.set_snapshot(snapshot)
        await measure(cold, calls, 1)  # warm up the interpreter, not the cache
        results["cold"] = summary(await measure(cold, calls, max(1, rounds // 10)))

        warm = Decider(engine, cache_size=4096)
        await warm.set_snapshot(snapshot)
        await measure(warm, calls, 1)  # fill the cache
        results["warm"] = summary(await measure(warm, calls, rounds))
        assert warm.cache_misses == len(calls), "the warm loop must not miss"
    finally:
        await engine.close()
    print(f"\n{label}: {len(calls)} distinct calls, {len(snapshot.recipients)} recipients")
    for name, row in results.items():
        print(
            f"  {name:5} cache: mean {row['mean']:8.2f} µs  p50 {row['p50']:8.2f} µs"
            f"  p99 {row['p99']:8.2f} µs  ({row['n']} decisions)"
        )
    ratio = results["cold"]["p50"] / results["warm"]["p50"]
    floor = decision_floor_us()
    print(
        f"  of a warm decision, building the Decision value itself (id + dataclass): {floor:.2f} µs"
    )
    print(f"  cold/warm p50 ratio: {ratio:.1f}x")
    return results


def decision_floor_us(n: int = 20_000) -> float:
    """What any decision costs without a policy or a cache: a fresh id and the frozen value."""
    started = time.perf_counter()
    for _ in range(n):
        Decision(
            decision_id=new_decision_id(),
            action="allow",
            recipient_id="twilio",
            purpose="service_delivery",
            categories=("contact.phone_number",),
        )
    return (time.perf_counter() - started) / n * 1e6


def start_opa() -> tuple[subprocess.Popen, str] | None:
    opa = shutil.which("opa")
    if opa is None:
        return None
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [opa, "run", "--server", "--addr", f"127.0.0.1:{port}", str(policy_dir())],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    process.terminate()
    return None


async def main(rounds: int) -> int:
    load_taxonomy()
    embedded = await bench_engine(create_engine("embedded"), "embedded (regorus)", rounds)
    warm = embedded["warm"]["p50"]
    print(
        f"  goal: warm decision under {GOAL_WARM_US} µs -> {'met' if warm < GOAL_WARM_US else 'NOT met'}"
    )
    started = start_opa()
    if started is None:
        print("\nopa: no opa binary on PATH, skipped")
        return 0
    process, url = started
    try:
        await bench_engine(
            create_engine("opa", opa_url=url, timeout=2.0), "opa", max(1, rounds // 10)
        )
    finally:
        process.terminate()
        process.wait(timeout=10)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=50, help="passes over the call mix (warm)")
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.rounds)))
