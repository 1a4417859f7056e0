"""A real `sharewall registry serve` for the proxy's end-to-end tests, and proxies following it."""

from __future__ import annotations

import gzip
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import requests
from proxy_harness import REGISTRY_YAML, REPO, ProxyProcess, Upstreams, free_port, pins

SHAREWALL = [sys.executable, "-m", "sharewall.cli"]


def run_cli(*args: str) -> str:
    out = subprocess.run(
        [*SHAREWALL, *args], cwd=REPO, capture_output=True, text=True, timeout=60, check=True
    )
    return out.stdout.strip()


class RegistryProcess:
    """`sharewall registry serve` on a fixed loopback port (kept across restarts)."""

    def __init__(self, workdir: Path, db_url: str, port: int) -> None:
        self.workdir, self.db_url, self.port = workdir, db_url, port
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = open(self.workdir / "registry.log", "ab")  # noqa: SIM115 - closed with the process
        env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
        self.proc = subprocess.Popen(
            [
                *SHAREWALL,
                "registry",
                "serve",
                "--db",
                self.db_url,
                "--listen",
                f"127.0.0.1:{self.port}",
            ],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        log.close()
        deadline = time.monotonic() + 120  # start-up on a loaded 2-core machine
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError((self.workdir / "registry.log").read_text())
            try:
                if requests.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            # A read timeout is a slow start too (on a loaded machine): the deadline decides.
            except (requests.ConnectionError, requests.Timeout):
                time.sleep(0.1)
        raise RuntimeError("registry did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


def start_following_proxy(
    workdir: Path, reg: RegistryProcess, token: str, upstreams: Upstreams, *extra: str
) -> ProxyProcess:
    (workdir / "ports.json").unlink(missing_ok=True)  # a restart must not read the old ports
    return ProxyProcess(
        workdir,
        [
            "--registry-url",
            reg.url,
            "--token",
            token,
            "--default-purpose",
            "service_delivery",
            *pins(upstreams),
            *extra,
        ],
    )


def wait_ready(proxy: ProxyProcess, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{proxy.admin_url}/readyz", timeout=1).status_code == 200:
                return
        # A read timeout is a slow start too (on a loaded machine): the deadline decides.
        except (requests.ConnectionError, requests.Timeout):
            pass
        time.sleep(0.05)
    raise AssertionError(f"proxy not ready:\n{proxy.log_text()[-3000:]}")


def new_registry(
    workdir: Path, roles: tuple[str, ...] = ("proxy", "security", "engineer")
) -> tuple[RegistryProcess, dict[str, str]]:
    """A started registry on SQLite, loaded with the proxy tests' registry file, with a token
    per role in `roles` (named t-ROLE)."""
    db_url = f"sqlite+aiosqlite:///{workdir / 'registry.sqlite'}"
    run_cli("registry", "apply", str(REGISTRY_YAML), "--db", db_url)
    tokens = {
        role: run_cli(
            "registry", "tokens", "create", "--role", role, "--name", f"t-{role}", "--db", db_url
        )
        for role in roles
    }
    reg = RegistryProcess(workdir, db_url, free_port())
    reg.start()
    return reg, tokens


def ship(reg: RegistryProcess, token: str, shipment: dict) -> dict:
    """POST `shipment` to `/v1/decisions` gzipped, as the proxy's shipper does; its answer
    (asserted 200)."""
    resp = requests.post(
        f"{reg.url}/v1/decisions",
        data=gzip.compress(orjson.dumps(shipment)),
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            "Content-Encoding": "gzip",
        },
        timeout=10,
    )
    assert resp.status_code == 200, resp.text
    return resp.json()


def api(reg: RegistryProcess, token: str, method: str, path: str, **kw) -> requests.Response:
    return requests.request(
        method, reg.url + path, headers={"Authorization": f"Bearer {token}"}, timeout=10, **kw
    )
