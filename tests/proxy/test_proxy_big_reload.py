"""A big registry file reloaded under calls: every call is answered by one whole version.

3,000 recipients (the file is decoded in a child process, validated, indexed and loaded into the
engine in slices while calls are served): calls made during the reload get the old version's
answer until the new one is in force, then the new one's, never a fault or a mix.
"""

from __future__ import annotations

import os
import threading
import time

import pytest
import requests
from proxy_harness import REGISTRY_YAML, start_proxy

FILLERS = 3000
MOVED = "api.moved.test"


def _registry(tmp_path, *, suspended: bool) -> str:
    """The test registry plus fillers; the new version suspends `vendor` and gives `MOVED` to a
    filler (registered nowhere before)."""
    text = REGISTRY_YAML.read_text()
    if suspended:
        text = text.replace("status: approved", "status: suspended", 1)
    lines = [text.rstrip("\n")]
    for i in range(FILLERS):
        hosts = f'api.filler{i}.test, "*.f{i}.test"'
        if suspended and i == 2:
            hosts += f", {MOVED}"
        lines += [
            f"  - id: filler-{i}",
            f"    name: Filler {i}",
            "    kind: vendor",
            "    status: approved",
            "    regions: [SG]",
            f"    hosts: [{hosts}]",
            "    grants:",
            "      - purpose: service_delivery",
            "        categories: [contact.phone_number, comms.content]",
            "        legal_basis: contract",
        ]
    return "\n".join(lines) + "\n"


@pytest.fixture
def big_proxy(tmp_path, certs, upstreams):
    registry = tmp_path / "registry.yaml"
    registry.write_text(_registry(tmp_path, suspended=False))
    pins = []
    for port in (upstreams.http_port,):
        pins += ["--resolve", f"{MOVED}:{port}:127.0.0.1"]
    p = start_proxy(
        tmp_path / "proxy", certs, upstreams, "--reload-interval", "0.1", *pins, registry=registry
    )
    yield p, registry
    p.stop()


def _outcome(response: requests.Response) -> str:
    if response.status_code == 200:
        return "allowed"
    codes = [r["code"] for r in response.json().get("reasons", [])]
    return f"{response.status_code} {','.join(codes)}"


def test_calls_during_a_big_file_reload_get_one_version_then_the_next(
    big_proxy, upstreams, tmp_path
):
    p, registry = big_proxy
    s = requests.Session()
    s.trust_env = False
    s.proxies = {"http": p.url}
    vendor = f"http://api.vendor.test:{upstreams.http_port}/big-reload"
    moved = f"http://{MOVED}:{upstreams.http_port}/big-reload"
    assert _outcome(s.get(vendor, timeout=10)) == "allowed"
    assert _outcome(s.get(moved, timeout=10)) == "403 UNKNOWN_RECIPIENT"

    seen: list[tuple[str, str]] = []
    stop = threading.Event()

    def calls() -> None:
        while not stop.is_set():
            seen.append((_outcome(s.get(vendor, timeout=10)), _outcome(s.get(moved, timeout=10))))

    caller = threading.Thread(target=calls)
    caller.start()
    try:
        time.sleep(0.3)
        new = tmp_path / "next.yaml"
        new.write_text(_registry(tmp_path, suspended=True))
        os.replace(new, registry)  # atomically, as a ConfigMap update does
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if sum(x.get("event") == "snapshot.loaded" for x in p.logs()) >= 2:
                break
            time.sleep(0.1)
        else:
            pytest.fail("the new registry file was not loaded")
        time.sleep(0.3)
    finally:
        stop.set()
        caller.join(30)

    old = ("allowed", "403 UNKNOWN_RECIPIENT")
    # A pair of calls may straddle the swap: the first by the old version, the second by the new.
    straddling = ("allowed", "allowed")
    current = ("403 RECIPIENT_INACTIVE", "allowed")
    assert set(seen) <= {old, straddling, current}, set(seen)
    assert seen[0] == old and seen[-1] == current
    # Once the new version answered, the old one never does again.
    first_new = next(i for i, pair in enumerate(seen) if pair != old)
    assert all(pair == current for pair in seen[first_new + 1 :])
    assert seen.count(straddling) <= 1
    loaded = [x for x in p.logs() if x.get("event") == "snapshot.loaded"]
    assert loaded[-1]["recipients"] == FILLERS + len(REGISTRY_YAML.read_text().split("  - id:")) - 1
