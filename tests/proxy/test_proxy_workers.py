"""`sharewall proxy --workers 2`: real worker processes behind one port and one admin port.

One supervised proxy (following a real `registry serve`) is shared by the tests, in order:
both workers answer on the port, the admin sums their counters, each worker ships its own
refusals once, a SIGKILLed worker makes the proxy not ready until it is restarted, and SIGTERM
lets calls in flight finish (the last test stops the proxy).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from proxy_harness import REGISTRY_YAML, REPO, ProxyProcess, Upstreams, free_port, pins
from registry_harness import RegistryProcess, api, new_registry, wait_ready
from test_proxy_imports import imported_modules

pytestmark = pytest.mark.timeout(300)

SOURCE = f"workers-{uuid.uuid4().hex[:6]}"
# Nothing of the proxy itself: the supervisor starts processes and adds numbers. Nor the
# inspector (~30 modules and phonenumbers' metadata: ~5 MB of the supervisor's RSS), which its
# settings' limits and the admin server's request reader used to bring along.
NOT_IN_SUPERVISOR = (
    "aiohttp",
    "proxy.app",
    "proxy.listener",
    "regorus",
    "proxy.inspect.",
    "proxy.decision",
    "proxy.exchange",
    "phonenumbers",
    "stdnum",
)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RegistryProcess, dict]]:
    reg, tokens = new_registry(tmp_path_factory.mktemp("registry"))
    yield reg, tokens
    reg.stop()


def _start_supervised(
    workdir: Path, registry: tuple[RegistryProcess, dict], upstreams: Upstreams
) -> ProxyProcess:
    """`proxy --workers 2` on the registry, with its admin port on a known port."""
    reg, tokens = registry
    admin = free_port()
    proxy = ProxyProcess(
        workdir,
        [
            "--workers", "2", "--registry-url", reg.url, "--token", tokens["proxy"],
            "--default-purpose", "service_delivery", "--source", SOURCE, *pins(upstreams),
            # The supervisor's admin port on a known port, and a recipient's name pinned to it.
            "--admin-listen", f"127.0.0.1:{admin}", "--resolve", f"api.vendor.test:{admin}:127.0.0.1",
        ],
        python_args=("-X", "importtime"),  # the supervisor's imports (workers run without)
    )  # fmt: skip
    wait_ready(proxy)
    return proxy


@pytest.fixture(scope="module")
def supervised(
    tmp_path_factory: pytest.TempPathFactory, registry, upstreams: Upstreams
) -> Iterator[ProxyProcess]:
    proxy = _start_supervised(tmp_path_factory.mktemp("workers"), registry, upstreams)
    yield proxy
    proxy.stop()


def _ports(proxy: ProxyProcess) -> dict:
    return json.loads((proxy.workdir / "ports.json").read_text())


def _direct() -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    return session


def _counter(metrics: str, series: str) -> float:
    match = re.search(rf"^{re.escape(series)} (\S+)$", metrics, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


DENIED = 'sharewall_decisions_total{action="deny",reason="UNKNOWN_RECIPIENT"}'


def _blocked_call(proxy: ProxyProcess, upstreams: Upstreams, marker: str) -> requests.Response:
    """A refused call on a connection of its own (the kernel picks a worker per connection)."""
    with requests.Session() as session:
        session.trust_env = False
        session.proxies = {"http": proxy.url}
        return session.post(
            f"http://api.unknown.test:{upstreams.http_port}/{marker}/{uuid.uuid4().hex[:8]}",
            data=b"{}",
            timeout=15,
        )


def test_the_supervisor_loads_nothing_of_the_proxy(supervised):
    modules = imported_modules(supervised.log_text())
    assert "proxy.supervisor" in modules  # the importtime lines are there
    assert not {m for m in modules if m.startswith(NOT_IN_SUPERVISOR)}


def test_both_workers_answer_on_one_port_and_the_admin_sums_their_counters(supervised, upstreams):
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: _blocked_call(supervised, upstreams, "w"), range(24)))
    assert [a.status_code for a in answers] == [403] * 24
    workers = _ports(supervised)["workers"]
    assert len({w["pid"] for w in workers}) == 2
    per_worker = [
        _counter(_direct().get(f"http://127.0.0.1:{w['admin'][1]}/metrics", timeout=5).text, DENIED)
        for w in workers
    ]
    assert all(count > 0 for count in per_worker), per_worker  # both took connections
    total = _direct().get(f"{supervised.admin_url}/metrics", timeout=5).text
    assert _counter(total, DENIED) == sum(per_worker) == 24
    assert _counter(total, 'sharewall_worker_up{worker="1"}') == 1


def test_each_worker_ships_its_own_refusals_once(supervised, registry, upstreams):
    reg, tokens = registry
    # Its own calls, told apart by a marker in their path: the test does not lean on the calls
    # of the tests before it (it passes alone, with -k).
    marker = f"ships-{uuid.uuid4().hex[:6]}"
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: _blocked_call(supervised, upstreams, marker), range(24)))
    assert [a.status_code for a in answers] == [403] * 24
    deadline = time.monotonic() + 60
    while True:
        resp = api(
            reg, tokens["security"], "GET", "/v1/flows", params={"source": SOURCE, "limit": "1000"}
        )
        flows = [f for f in resp.json()["flows"] if f["path"].startswith(f"/{marker}/")]
        if len(flows) >= 24 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    time.sleep(1.0)  # a record shipped twice would arrive after the first copy
    resp = api(
        reg, tokens["security"], "GET", "/v1/flows", params={"source": SOURCE, "limit": "1000"}
    )
    flows = [f for f in resp.json()["flows"] if f["path"].startswith(f"/{marker}/")]
    ids = [f["decision_id"] for f in flows]
    assert len(ids) == len(set(ids)) == 24
    # Worker 0 ships as the proxy itself, worker 1 as `<proxy id>-w1`: two ledgers.
    proxy_ids = {f["proxy_id"] for f in flows}
    assert len(proxy_ids) == 2
    assert any(p.endswith("-w1") for p in proxy_ids)
    # Each worker's segments are in its own directory (worker 0 in the spool directory).
    assert (supervised.spool_dir / "spool.lock").exists()
    assert (supervised.spool_dir / "worker-1" / "spool.lock").exists()


def test_no_worker_forwards_a_call_to_the_supervisors_admin_port(supervised):
    session = _direct()
    session.proxies = {"http": supervised.url}
    for _ in range(6):  # on new connections: both workers get some
        with session.get(
            f"http://api.vendor.test:{supervised.admin_port}/metrics", timeout=15
        ) as r:
            assert r.status_code == 403
            assert [x["code"] for x in r.json()["reasons"]] == ["DESTINATION_FORBIDDEN"]
        session.close()


def test_a_killed_worker_is_restarted_not_ready_meanwhile_and_its_records_shipped_once(
    supervised, registry, upstreams
):
    reg, tokens = registry
    admin = _direct()
    victim = _ports(supervised)["workers"][1]
    victim_metrics = f"http://127.0.0.1:{victim['admin'][1]}/metrics"
    own_before = _counter(admin.get(victim_metrics, timeout=5).text, DENIED)
    marker = f"succ-{uuid.uuid4().hex[:6]}"
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: _blocked_call(supervised, upstreams, marker), range(16)))
    assert [a.status_code for a in answers] == [403] * 16
    # Some of them were refused by the victim: their records are on its disk only.
    assert _counter(admin.get(victim_metrics, timeout=5).text, DENIED) > own_before
    before = admin.get(f"{supervised.admin_url}/metrics", timeout=5).text
    signal_sent = time.monotonic()
    os.kill(victim["pid"], signal.SIGKILL)
    reasons: list[str] = []
    while not reasons and time.monotonic() < signal_sent + 30:
        ready = admin.get(f"{supervised.admin_url}/readyz", timeout=5)
        if ready.status_code == 503:
            reasons = ready.json()["reasons"]
    assert reasons and all(r.startswith("worker 1 ") for r in reasons), reasons
    wait_ready(supervised)
    restarted = _ports(supervised)["workers"][1]
    assert restarted["pid"] != victim["pid"]
    after = admin.get(f"{supervised.admin_url}/metrics", timeout=5).text
    assert _counter(after, 'sharewall_worker_restarts_total{worker="1"}') == 1
    # The dead worker's counts are carried on: the sum never goes back.
    assert _counter(after, DENIED) == _counter(before, DENIED)
    # Its successor found its segment in worker-1/ and shipped it: every refusal, once.
    deadline = time.monotonic() + 60
    while True:
        flows = api(
            reg, tokens["security"], "GET", "/v1/flows", params={"source": SOURCE, "limit": "1000"}
        )
        mine = [f for f in flows.json()["flows"] if marker in f["path"]]
        if len(mine) >= 16 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert sorted(f["decision_id"] for f in mine) == sorted(
        a.json()["decision_id"] for a in answers
    )


def test_a_second_supervisor_cannot_take_a_share_of_the_port(supervised, tmp_path):
    out = subprocess.run(
        [
            sys.executable, "-m", "sharewall.cli", "proxy", "--workers", "2", "--registry-file",
            str(REGISTRY_YAML), "--listen", f"127.0.0.1:{supervised.port}",
            "--admin-listen", "127.0.0.1:0", "--spool-dir", str(tmp_path),
        ],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    assert out.returncode == 2
    assert f"cannot listen on ('127.0.0.1', {supervised.port})" in out.stderr
    assert "supervisor.worker_started" not in out.stdout  # refused before any worker


@pytest.fixture
def own_supervised(tmp_path: Path, registry, upstreams: Upstreams) -> Iterator[ProxyProcess]:
    """A supervisor for a test that stops it (the module's shared one must outlive it)."""
    proxy = _start_supervised(tmp_path, registry, upstreams)
    yield proxy
    proxy.stop()


def test_sigterm_lets_calls_in_flight_finish_on_every_worker(own_supervised, upstreams):
    supervised = own_supervised
    marker = f"drain-{uuid.uuid4().hex[:6]}"
    workers = _ports(supervised)["workers"]

    def slow_call(i: int) -> int:
        with socket.create_connection(("127.0.0.1", supervised.port), timeout=30) as sock:
            sock.sendall(
                f"GET http://api.vendor.test:{upstreams.http_port}/slow/5?{marker}={i} HTTP/1.1\r\n"
                f"Host: api.vendor.test:{upstreams.http_port}\r\nConnection: close\r\n\r\n".encode()
            )
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        return int(data.split(b" ", 2)[1])

    def in_flight() -> list[float]:
        return [
            _counter(
                _direct().get(f"http://127.0.0.1:{w['admin'][1]}/metrics", timeout=5).text,
                "sharewall_inflight_requests",
            )
            for w in workers
        ]

    with ThreadPoolExecutor(24) as pool:
        # The kernel picks a worker per connection by a hash of its ports: calls are added 6 at
        # a time until every worker has some in flight (12 calls all went to one worker once).
        # Each is held 5 s upstream: still in flight when the counts are read and at SIGTERM.
        calls: list = []
        while True:
            calls += [pool.submit(slow_call, len(calls) + i) for i in range(6)]
            deadline = time.monotonic() + 30
            while len(upstreams.find(marker)) < len(calls) and time.monotonic() < deadline:
                time.sleep(0.02)
            assert len(upstreams.find(marker)) == len(calls)  # every call is upstream now
            busy = in_flight()
            if all(n > 0 for n in busy) or len(calls) >= 24:
                break
        assert [w["pid"] for w in _ports(supervised)["workers"]] == [w["pid"] for w in workers]
        code = supervised.stop(signal.SIGTERM, timeout=60)
        statuses = [c.result() for c in calls]
    assert all(n > 0 for n in busy), busy  # both workers were draining
    assert statuses == [200] * len(calls)
    assert code == 0
    stopped = [line for line in supervised.logs() if line.get("event") == "proxy.stopped"]
    assert len(stopped) == 3  # both workers, then the supervisor
    # Three processes wrote to one stdout: every line is whole (none cut into by another's).
    lines = [line for line in supervised.log_text().splitlines() if line and line[0] == "{"]
    assert [json.loads(line) for line in lines]


def test_what_a_removed_worker_left_is_shipped_by_the_next_proxy_on_the_directory(
    registry, upstreams, tmp_path
):
    reg, tokens = registry
    source = f"leftover-{uuid.uuid4().hex[:6]}"
    args = [
        "--registry-url", reg.url, "--token", tokens["proxy"], "--source", source,
        "--default-purpose", "service_delivery", *pins(upstreams),
    ]  # fmt: skip
    two = ProxyProcess(tmp_path / "two", [*args, "--workers", "2", "--spool-dir", str(tmp_path)])
    workers: list[dict] = []
    try:
        wait_ready(two)
        # The calls are made while the registry is down: nothing is shipped, so what each
        # worker wrote stays in its directory however long the calls take (a segment is sealed
        # and shipped 2 s after its first record; under load the calls took longer than that).
        reg.stop()
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: _blocked_call(two, upstreams, "left"), range(16)))
        workers = _ports(two)["workers"]
    finally:
        for worker in workers:  # all at once: no drain, no last shipment
            os.kill(worker["pid"], signal.SIGKILL)
        two.stop(signal.SIGKILL)
        if reg.proc is None:
            reg.start()
    assert [a.status_code for a in answers] == [403] * 16
    assert list((tmp_path / "worker-1").glob("segment-*"))  # worker 1 left records behind

    one = ProxyProcess(tmp_path / "one", [*args, "--spool-dir", str(tmp_path)])  # one process
    try:
        wait_ready(one)
        deadline = time.monotonic() + 60
        while (tmp_path / "worker-1").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        flows = api(reg, tokens["security"], "GET", "/v1/flows", params={"source": source})
    finally:
        one.stop()
    assert not (tmp_path / "worker-1").exists()
    shipped = flows.json()["flows"]
    assert sorted(f["decision_id"] for f in shipped) == sorted(
        a.json()["decision_id"] for a in answers
    )
    # Worker 1's records went out as worker 1, the rest as the proxy (once each).
    assert {f["proxy_id"].endswith("-w1") for f in shipped} == {True, False}


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        pytest.param(["--workers", "0"], "--workers: must be between 1 and 256", id="no workers"),
        pytest.param(["--workers", "many"], "'many' is not a number or 'auto'", id="not a count"),
        pytest.param(
            ["--workers", "auto", "--registry-file", "missing.yaml"],
            "missing.yaml",
            id="a worker cannot start",
        ),
    ],
)
def test_a_start_that_cannot_work_exits_2_and_says_why(flags, said, tmp_path):
    out = subprocess.run(
        [
            sys.executable, "-m", "sharewall.cli", "proxy", "--registry-file",
            str(REGISTRY_YAML), "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
            "--spool-dir", str(tmp_path), *flags,
        ],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert said in out.stderr
    assert "Traceback" not in out.stderr


@pytest.fixture(scope="module")
def watched(
    tmp_path_factory: pytest.TempPathFactory, upstreams: Upstreams
) -> Iterator[ProxyProcess]:
    """A supervised proxy on the registry file probing its workers every second."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SHAREWALL_WORKER_HEALTH_INTERVAL", "1")
        proxy = ProxyProcess(
            tmp_path_factory.mktemp("watched"),
            ["--workers", "2", "--registry-file", str(REGISTRY_YAML), *pins(upstreams)],
        )
    wait_ready(proxy)
    yield proxy
    proxy.stop(signal.SIGKILL)


def test_a_hung_worker_is_killed_and_restarted(watched):
    hung = _ports(watched)["workers"][1]
    os.kill(hung["pid"], signal.SIGSTOP)  # its event loop answers nothing any more
    try:
        deadline = time.monotonic() + 90
        while _ports(watched)["workers"][1]["pid"] == hung["pid"] and time.monotonic() < deadline:
            time.sleep(0.2)
        wait_ready(watched)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(hung["pid"], signal.SIGKILL)
    assert _ports(watched)["workers"][1]["pid"] != hung["pid"]
    [event] = watched.lines_where(lambda e: e.get("event") == "supervisor.worker_unresponsive")
    assert (event["worker"], event["pid"], event["missed_probes"]) == (1, hung["pid"], 3)


def test_workers_stop_when_their_supervisor_dies(watched):
    pids = [w["pid"] for w in _ports(watched)["workers"]]
    watched.stop(signal.SIGKILL)
    deadline = time.monotonic() + 60
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in pids if _alive(pid)]
    assert watched.log_text().count('"event":"proxy.stopped"') == 2  # each drained and stopped


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
