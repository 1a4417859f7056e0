"""The sign-in throttle counts an IPv6 client by its /64: rotating addresses inside one network
(every host gets at least a /64) does not buy a fresh bucket per guess.

The real `sharewall registry serve` runs in a network namespace of its own whose loopback holds
a few IPv6 addresses (a ULA range that exists only there); curl connects from chosen ones.
Needs root and `ip`; the namespace is deleted in a `finally`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest

SERVER = "fd78::1"
SAME_64 = ("fd78::a", "fd78::b")
OTHER_64 = "fd78:0:0:1::a"


def _missing() -> str | None:
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        return "needs root on Linux (a network namespace)"
    for tool in ("ip", "curl"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    return None


pytestmark = pytest.mark.skipif(_missing() is not None, reason=str(_missing()))


def _run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, text=True)


@pytest.fixture
def namespace() -> Iterator[str]:
    name = f"swreg{uuid.uuid4().hex[:8]}"
    _run("ip", "netns", "add", name)
    try:
        _run("ip", "-n", name, "link", "set", "lo", "up")
        for address in (SERVER, *SAME_64, OTHER_64):
            _run("ip", "-n", name, "addr", "add", f"{address}/128", "dev", "lo", "nodad")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


@pytest.fixture
def served(namespace: str, db_url: str) -> Iterator[str]:
    """The registry process listening on [fd78::1] inside the namespace; yields its URL."""
    if not db_url.startswith("sqlite"):
        pytest.skip("the namespace reaches no PostgreSQL server")
    serve = ["registry", "serve", "--db", db_url, "--listen", f"[{SERVER}]:0"]
    proc = subprocess.Popen(
        ["ip", "netns", "exec", namespace, sys.executable, "-m", "sharewall.cli", *serve],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = None
        assert proc.stdout is not None
        deadline = time.monotonic() + 120  # start-up on a loaded 2-core machine
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            if '"registry.listening"' in line:
                url = f"http://[{SERVER}]:{json.loads(line)['port']}"
                break
        assert url, "registry did not log registry.listening"
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        proc.stdout.close()


def _status(namespace: str, url: str, source: str, secret: str) -> int:
    curl = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--interface", source]
    header = ["-H", f"Authorization: Bearer {secret}"]
    out = subprocess.run(
        ["ip", "netns", "exec", namespace, *curl, *header, url + "/v1/recipients"],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    )
    return int(out.stdout)


def test_addresses_of_one_ipv6_64_share_a_bucket(namespace, served, tokens):
    first, second = SAME_64
    for _ in range(10):  # the default burst
        assert _status(namespace, served, first, "sw_guess") == 401
    assert _status(namespace, served, first, "sw_guess") == 429
    # Another address of the same /64 is the same client; a valid token still passes there.
    assert _status(namespace, served, second, "sw_guess") == 429
    assert _status(namespace, served, second, tokens["engineer"]) == 200
    # Another /64 is another client.
    assert _status(namespace, served, OTHER_64, "sw_guess") == 401
