"""The admission webhook's cost per AdmissionReview: p50/p99 in process and over HTTPS.

In process: `injector.webhook.review` (parse, inject, JSON Patch, encode) on the replayed reviews
of tests/data/injector, with `inject_pod` alone beside it. Over HTTPS: a real `sharewall injector
serve` process on loopback, one keep-alive connection, each review posted in turn; the baseline
is `GET /healthz` on the same connection in the same run (TLS, HTTP and aiohttp without the
review), so the difference is what injecting costs the API server's call.
"""

from __future__ import annotations

import argparse
import json
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import trustme

from injector import InjectorConfig, inject_pod
from injector.webhook import review

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data" / "injector"
REVIEWS = ("deployment-pod.json", "existing-init-container.json", "already-injected.json")


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _row(name: str, samples: list[float]) -> str:
    ms = [s * 1e3 for s in samples]
    return f"{name:<44} {_pct(ms, 0.5):8.3f} {_pct(ms, 0.99):8.3f} {statistics.fmean(ms):8.3f}"


def in_process(n: int) -> None:
    config = InjectorConfig()
    transparent = InjectorConfig(capture="transparent")
    print(f"\nin process, {n} runs each (ms)")
    print(f"{'':<44} {'p50':>8} {'p99':>8} {'mean':>8}")
    for name in REVIEWS:
        body = (DATA / name).read_bytes()
        pod = json.loads(body)["request"]["object"]
        for label, cfg in (("proxy-env", config), ("transparent", transparent)):
            review(body, cfg)
            samples = []
            for _ in range(n):
                t = time.perf_counter()
                review(body, cfg)
                samples.append(time.perf_counter() - t)
            print(_row(f"review {name} ({label})", samples))
        samples = []
        for _ in range(n):
            t = time.perf_counter()
            inject_pod(pod, config)
            samples.append(time.perf_counter() - t)
        print(_row(f"  inject_pod alone ({name})", samples))


def over_https(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        ca = trustme.CA()
        leaf = ca.issue_cert("127.0.0.1")
        ca.cert_pem.write_to_path(str(tmp / "ca.pem"))
        leaf.private_key_pem.write_to_path(str(tmp / "tls.key"))
        (tmp / "tls.crt").write_bytes(b"".join(b.bytes() for b in leaf.cert_chain_pems))
        port_file = tmp / "port.json"
        sharewall = Path(sys.executable).parent / "sharewall"
        proc = subprocess.Popen(
            [str(sharewall), "injector", "serve", "--tls-cert", str(tmp / "tls.crt"),
             "--tls-key", str(tmp / "tls.key"), "--listen", "127.0.0.1:0",
             "--port-file", str(port_file), "--log-level", "warning"],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while not port_file.exists() or not port_file.read_text():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("injector did not start")
                time.sleep(0.05)
            url = f"https://127.0.0.1:{json.loads(port_file.read_text())['listen']}"
            verify = ssl.create_default_context(cafile=str(tmp / "ca.pem"))
            print(f"\nover HTTPS, one keep-alive connection, {n} requests each (ms)")
            print(f"{'':<44} {'p50':>8} {'p99':>8} {'mean':>8}")
            with httpx.Client(verify=verify, timeout=10) as client:
                client.get(f"{url}/healthz")
                base = []
                for _ in range(n):
                    t = time.perf_counter()
                    client.get(f"{url}/healthz")
                    base.append(time.perf_counter() - t)
                print(_row("GET /healthz (baseline)", base))
                for name in REVIEWS:
                    body = (DATA / name).read_bytes()
                    headers = {"Content-Type": "application/json"}
                    samples = []
                    for _ in range(n):
                        t = time.perf_counter()
                        resp = client.post(f"{url}/mutate", content=body, headers=headers)
                        samples.append(time.perf_counter() - t)
                        assert resp.status_code == 200
                    print(_row(f"POST /mutate {name}", samples))
                    added = (_pct(samples, 0.5) - _pct(base, 0.5)) * 1e3
                    print(f"{'  added to the baseline p50':<44} {added:8.3f}")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)


def main() -> int:
    """Print p50/p99 per review in process and over HTTPS."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reviews", type=int, default=2000, help="runs per case (in process)")
    parser.add_argument("--requests", type=int, default=500, help="requests per case (HTTPS)")
    args, _ = parser.parse_known_args()  # run_all.py passes its own arguments to every script
    in_process(args.reviews)
    over_https(args.requests)
    return 0


if __name__ == "__main__":
    sys.exit(main())
