"""Transparent capture end to end: a "pod" and an "internet" network namespace joined by a veth.

The pod runs `sharewall proxy --transparent-listen` as UID 1337 and `sharewall capture-rules
--apply`; an app runs there as UID 1000 with no proxy settings and connects straight to the
internet's addresses. The internet namespace runs the servers of `netns/servers.py`. Every
address lives only inside these namespaces (10.77.0.0/24), so nothing else is ever contacted;
names are pinned with `--resolve` (the proxy has no DNS there).

Namespaces, veth and rules are created with names unique to the run and deleted in a
`finally` (deleting a namespace deletes its veth end and its iptables rules), also on failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trustme

from proxy.certs import generate_ca

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent / "netns"
REGISTRY_YAML = REPO / "tests" / "data" / "proxy" / "registry.yaml"
NAMES = ("api.vendor.test", "origin.vendor.test", "tunnel.vendor.test", "partner.affiliate.test")
POD_ADDR = "10.77.0.2"
SERVER_ADDR = "10.77.0.1"  # where every name is pinned
OTHER_ADDR = "10.77.0.3"  # a second internet server no name leads to
# With ipv6=True: the same, in a ULA range that exists only inside the namespaces.
POD_ADDR6 = "fd77::2"
SERVER_ADDR6 = "fd77::1"
OTHER_ADDR6 = "fd77::3"
V6_NAMES = ("api.vendor.test", "origin.vendor.test")  # pinned to SERVER_ADDR6 with ipv6=True
PROXY_UID = 1337
APP_UID = 1000
TRANSPARENT_PORT = 15001
SOURCE = ("sms-gateway", "messaging")


def missing_requirement() -> str | None:
    """Why the namespace tests cannot run here, or None."""
    if not sys.platform.startswith("linux"):
        return "needs Linux network namespaces"
    if os.geteuid() != 0:
        return "needs root (network namespaces, veth, iptables)"
    for tool in ("ip", "iptables", "iptables-restore", "setpriv"):
        if shutil.which(tool) is None:
            return f"needs {tool} (`make test` as root installs Debian's iptables)"
    return None


def _run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, text=True)


@dataclass
class Pod:
    """The running namespaces, servers and proxy; the helpers a test calls."""

    workdir: Path
    pod_ns: str
    inet_ns: str
    ca_file: Path  # trusted by the app: the internet's CA and the proxy's interception CA
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def seen_path(self) -> Path:
        return self.workdir / "seen.jsonl"

    @property
    def proxy_log(self) -> Path:
        return self.workdir / "proxy.log"

    def app(self, *args: str, uid: int = APP_UID, timeout: float = 30) -> dict[str, Any]:
        """Run the app (netns/client.py) in the pod under `uid`, without any proxy variable."""
        command = ["ip", "netns", "exec", self.pod_ns, "setpriv", f"--reuid={uid}"]
        command += [f"--regid={uid}", "--clear-groups", "--", sys.executable, "-S"]
        command += [str(HERE / "client.py"), *args]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.workdir)}
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, env=env, check=False
        )
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def https(self, addr: str, name: str, *, uid: int = APP_UID, **kw: str) -> dict[str, Any]:
        """A TLS call from the app to `addr`:443 with SNI `name` (kw: path, body, purpose)."""
        args = ("https", addr, "443", name, "--cafile", str(self.ca_file), *_opts(kw))
        return self.app(*args, uid=uid)

    def http(self, addr: str, name: str, *, uid: int = APP_UID, **kw: str) -> dict[str, Any]:
        """A plain-HTTP call from the app to `addr`:80 with Host `name` (kw: path, body, purpose)."""
        return self.app("http", addr, "80", name, *_opts(kw), uid=uid)

    def seen(self, marker: str) -> list[dict[str, Any]]:
        """Requests the internet servers received whose path contains `marker`."""
        if not self.seen_path.exists():
            return []
        rows = [json.loads(line) for line in self.seen_path.read_text().splitlines() if line]
        return [r for r in rows if marker in r["path"]]

    def decisions(self) -> list[dict[str, Any]]:
        """The proxy's `egress.decision` lines so far."""
        out = []
        for line in self.proxy_log.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                row = json.loads(line)
                if isinstance(row, dict) and row.get("event") == "egress.decision":
                    out.append(row)
        return out

    def decision_where(self, timeout: float = 5.0, **match: Any) -> dict[str, Any]:
        """The last decision line whose fields equal `match` (waits for it to be written)."""
        deadline = time.monotonic() + timeout
        while True:
            rows = [d for d in self.decisions() if all(d.get(k) == v for k, v in match.items())]
            if rows:
                return rows[-1]
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no decision line with {match}:\n{self.proxy_log.read_text()}"
                )
            time.sleep(0.05)

    def logs(self) -> list[dict[str, Any]]:
        out = []
        for line in self.proxy_log.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                row = json.loads(line)
                if isinstance(row, dict):
                    out.append(row)
        return out


def _opts(kw: dict[str, str]) -> list[str]:
    out: list[str] = []
    for key, value in kw.items():
        out += [f"--{key}", value]
    return out


def _readable_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o755)
    return path


@contextlib.contextmanager
def transparent_pod(extra_proxy_args: tuple[str, ...] = (), *, ipv6: bool = False) -> Iterator[Pod]:
    """The pod and internet namespaces with the servers, the proxy and the capture rules.

    `ipv6`: both namespaces also get IPv6 addresses, `V6_NAMES` are pinned to `SERVER_ADDR6`,
    the proxy listens dual-stack on `[::]` and the rules are applied with `--ipv6`.
    """
    run_id = uuid.uuid4().hex[:6]
    pod_ns, inet_ns = f"swpod-{run_id}", f"swnet-{run_id}"
    veth_pod, veth_inet = f"swp{run_id}", f"swi{run_id}"
    # Not pytest's tmp_path: it is private to root, and the proxy and the app run as others.
    workdir = _readable_dir(Path(tempfile.mkdtemp(prefix=f"sw-transparent-{run_id}-")))
    pod: Pod | None = None
    created: list[str] = []
    try:
        certs = _readable_dir(workdir / "certs")
        generate_ca(certs / "proxy-ca.pem", certs / "proxy-ca.key")
        (certs / "proxy-ca.key").chmod(stat.S_IRUSR | stat.S_IWUSR | stat.S_IRGRP | stat.S_IROTH)
        internet_ca = trustme.CA()
        internet_ca.cert_pem.write_to_path(str(certs / "internet-ca.pem"))
        leaf = internet_ca.issue_cert(*NAMES)
        leaf.private_key_and_cert_chain_pem.write_to_path(str(certs / "leaf.pem"))
        ca_file = certs / "app-trust.pem"
        ca_file.write_bytes(
            (certs / "internet-ca.pem").read_bytes() + (certs / "proxy-ca.pem").read_bytes()
        )
        spool = _readable_dir(workdir / "spool")
        run_dir = _readable_dir(workdir / "run")  # the proxy's own: port file
        for path in (spool, run_dir):
            os.chown(path, PROXY_UID, PROXY_UID)
        (workdir / "seen.jsonl").touch()

        for ns in (pod_ns, inet_ns):
            _run("ip", "netns", "add", ns)
            created.append(ns)
            _run("ip", "-n", ns, "link", "set", "lo", "up")
        _run(
            "ip", "link", "add", veth_pod, "netns", pod_ns, "type", "veth",
            "peer", "name", veth_inet, "netns", inet_ns,
        )  # fmt: skip
        _run("ip", "-n", pod_ns, "addr", "add", f"{POD_ADDR}/24", "dev", veth_pod)
        for addr in (SERVER_ADDR, OTHER_ADDR):
            _run("ip", "-n", inet_ns, "addr", "add", f"{addr}/24", "dev", veth_inet)
        if ipv6:
            _run("ip", "-n", pod_ns, "addr", "add", f"{POD_ADDR6}/64", "dev", veth_pod, "nodad")
            for addr in (SERVER_ADDR6, OTHER_ADDR6):
                _run("ip", "-n", inet_ns, "addr", "add", f"{addr}/64", "dev", veth_inet, "nodad")
        _run("ip", "-n", pod_ns, "link", "set", veth_pod, "up")
        _run("ip", "-n", inet_ns, "link", "set", veth_inet, "up")

        pod = Pod(workdir=workdir, pod_ns=pod_ns, inet_ns=inet_ns, ca_file=ca_file)
        with open(workdir / "servers.err", "wb") as err:  # the child keeps its own copy
            servers = subprocess.Popen(
                ["ip", "netns", "exec", inet_ns, sys.executable, str(HERE / "servers.py"),
                 "--addr", SERVER_ADDR, "--addr", OTHER_ADDR,
                 *(["--addr", SERVER_ADDR6, "--addr", OTHER_ADDR6] if ipv6 else []),
                 "--cert", str(certs / "leaf.pem"),
                 "--seen", str(pod.seen_path)],
                stdout=subprocess.PIPE, stderr=err,
            )  # fmt: skip
        pod.procs.append(servers)
        assert servers.stdout is not None
        ready = servers.stdout.readline()
        assert ready.strip() == b"ready", (workdir / "servers.err").read_text()

        port_file = run_dir / "ports.json"
        pins: list[str] = []
        for name in NAMES:
            address = f"[{SERVER_ADDR6}]" if ipv6 and name in V6_NAMES else SERVER_ADDR
            for port in (80, 443):
                pins += ["--resolve", f"{name}:{port}:{address}"]
        listen = f"[::]:{TRANSPARENT_PORT}" if ipv6 else f"127.0.0.1:{TRANSPARENT_PORT}"
        proxy_cmd = [
            "ip", "netns", "exec", pod_ns, "setpriv", f"--reuid={PROXY_UID}",
            f"--regid={PROXY_UID}", "--clear-groups", "--",
            sys.executable, "-m", "sharewall.cli", "proxy",
            "--registry-file", str(REGISTRY_YAML),
            "--listen", "127.0.0.1:15080", "--admin-listen", "off",
            "--transparent-listen", listen,
            "--port-file", str(port_file), "--spool-dir", str(spool),
            "--default-purpose", "service_delivery",
            "--source", SOURCE[0], "--namespace", SOURCE[1],
            "--ca-cert", str(certs / "proxy-ca.pem"), "--ca-key", str(certs / "proxy-ca.key"),
            "--upstream-ca", str(certs / "internet-ca.pem"),
            "--first-bytes-timeout", "1",
            *pins, *extra_proxy_args,
        ]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
        env["HOME"] = str(workdir)
        with open(pod.proxy_log, "wb") as log:  # the child keeps its own copy
            proxy = subprocess.Popen(
                proxy_cmd, stdout=log, stderr=subprocess.STDOUT, cwd=workdir, env=env
            )
        pod.procs.append(proxy)
        deadline = time.monotonic() + 120  # start-up on a loaded 2-core machine
        while not port_file.exists():
            if proxy.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"proxy did not start:\n{pod.proxy_log.read_text()}")
            time.sleep(0.05)

        rules = subprocess.run(
            ["ip", "netns", "exec", pod_ns, sys.executable, "-m", "sharewall.cli",
             "capture-rules", "--apply", "--proxy-uid", str(PROXY_UID),
             "--port", str(TRANSPARENT_PORT), *(["--ipv6"] if ipv6 else [])],
            capture_output=True, text=True, check=True, cwd=REPO,
        )  # fmt: skip
        pod.capture_line = json.loads(rules.stdout)  # type: ignore[attr-defined]
        yield pod
    finally:
        if pod is not None:
            for proc in pod.procs:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
            for proc in pod.procs:
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
                if proc.stdout is not None:
                    proc.stdout.close()
        for ns in created:
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)
        shutil.rmtree(workdir, ignore_errors=True)
