"""No record lost, none leaked: real proxies, a real `registry serve`, `kill -9`, a full disk.

- A refused call's record is on disk before its answer leaves: killed right after 50 blocked
  answers, a successor on the same spool ships every one, and `/v1/flows` shows each once.
- A spool directory has one owner; a successor ships a predecessor's segments only to the
  registry they were written for.
- A full spool disk: not ready (and why), refusals become 503s, nothing torn or doubled after.
- Personal data in a URL never reaches the decision line, the spool or the registry.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
import pytest
import requests
from proxy_harness import PHONE, REGISTRY_YAML, REPO, ProxyProcess, Upstreams
from registry_harness import (
    RegistryProcess,
    api,
    new_registry,
    start_following_proxy,
    wait_ready,
)
from tiny_disk import fill, tiny_tmpfs

# Several proxy and registry processes each: on a loaded 2-core CI machine that takes minutes.
pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RegistryProcess, dict]]:
    reg, tokens = new_registry(tmp_path_factory.mktemp("registry"))
    yield reg, tokens
    reg.stop()


def blocked_call(session: requests.Session, upstreams: Upstreams, marker: str) -> requests.Response:
    """A call to a host no recipient has: 403 UNKNOWN_RECIPIENT (or 503 if unrecordable)."""
    return session.post(
        f"http://api.unknown.test:{upstreams.http_port}/{marker}/{uuid.uuid4().hex[:8]}",
        data=b"{}",
        timeout=15,
    )


def flows_of(reg: RegistryProcess, token: str, source: str, **query: str) -> list[dict]:
    """Every flow of one source workload in `/v1/flows` (all pages)."""
    flows: list[dict] = []
    cursor = None
    while True:
        params = {"source": source, "limit": "1000", **query}
        if cursor:
            params["cursor"] = cursor
        resp = api(reg, token, "GET", "/v1/flows", params=params)
        assert resp.status_code == 200, resp.text
        page = resp.json()
        flows += page["flows"]
        cursor = page["next_cursor"]
        if not cursor:
            return flows


def wait_for_flows(
    reg: RegistryProcess, token: str, source: str, count: int, timeout: float = 30
) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        flows = flows_of(reg, token, source)
        if len(flows) >= count or time.monotonic() > deadline:
            return flows
        time.sleep(0.3)


def spooled_records(spool: Path) -> list[dict]:
    """Every record in the spool's segments (a torn or corrupt line fails the test)."""
    return [
        doc
        for path in sorted(spool.glob("segment-*"))
        for doc in map(orjson.loads, path.read_bytes().splitlines())
        if "decision_id" in doc
    ]


def test_kill_9_right_after_50_blocked_answers_loses_no_record(registry, upstreams, tmp_path):
    reg, tokens = registry
    source = f"kill9-{uuid.uuid4().hex[:6]}"
    spool = tmp_path / "spool"
    first = start_following_proxy(
        tmp_path / "first", reg, tokens["proxy"], upstreams, "--source", source,
        "--spool-dir", str(spool),
    )  # fmt: skip
    try:
        wait_ready(first)
        session = first.session()
        # Ten at a time: records of one instant share an fsync, and each waits for it.
        with ThreadPoolExecutor(10) as pool:
            answers = list(pool.map(lambda i: blocked_call(session, upstreams, "k9"), range(50)))
    finally:
        first.stop(signal.SIGKILL)  # no drain, no seal, no last shipment
    assert [r.status_code for r in answers] == [403] * 50
    ids = sorted(r.json()["decision_id"] for r in answers)
    # What the kill left open is what the successor recovers: a segment is sealed 2 s after
    # its first record, so on a loaded machine the last one may have been sealed just before.
    left_open = list(spool.glob("*.open"))

    successor = start_following_proxy(
        tmp_path / "successor", reg, tokens["proxy"], upstreams, "--source", source,
        "--spool-dir", str(spool),
    )  # fmt: skip
    try:
        wait_ready(successor)
        flows = wait_for_flows(reg, tokens["security"], source, 50)
    finally:
        successor.stop()
    assert sorted(f["decision_id"] for f in flows) == ids  # every one, each exactly once
    assert {(f["kind"], f["status"]) for f in flows} == {("deny", 403)}
    assert ("spool.recovered_segment" in successor.log_text()) == bool(left_open)


def test_a_second_proxy_on_the_same_spool_refuses_to_start(upstreams, tmp_path):
    spool = tmp_path / "spool"
    owner = ProxyProcess(
        tmp_path / "owner", ["--registry-file", str(REGISTRY_YAML), "--spool-dir", str(spool)]
    )
    try:
        second = subprocess.run(
            [
                sys.executable, "-m", "sharewall.cli", "proxy", "--registry-file",
                str(REGISTRY_YAML), "--listen", "127.0.0.1:0", "--admin-listen", "off",
                "--spool-dir", str(spool),
            ],
            cwd=REPO, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    finally:
        owner.stop()
    assert second.returncode == 2
    [line] = second.stderr.splitlines()
    assert "in use by another proxy" in line and str(spool) in line
    assert "Traceback" not in second.stdout + second.stderr


def test_a_successor_ships_segments_only_to_the_registry_they_were_written_for(
    registry, upstreams, tmp_path
):
    reg, tokens = registry
    source = f"foreign-{uuid.uuid4().hex[:6]}"
    spool = tmp_path / "spool"
    proxy = start_following_proxy(
        tmp_path / "first", reg, tokens["proxy"], upstreams, "--source", source,
        "--spool-dir", str(spool),
    )  # fmt: skip
    try:
        wait_ready(proxy)
        # Made with the registry down: nothing is shipped before the kill, however long the
        # calls take (a segment is sealed and shipped 2 s after its first record).
        reg.stop()
        session = proxy.session()
        ids = sorted(blocked_call(session, upstreams, "fr").json()["decision_id"] for _ in range(5))
    finally:
        proxy.stop(signal.SIGKILL)
        if reg.proc is None:
            reg.start()
    # One segment, or two when the calls outlasted a segment's 2 s: each is kept, none sent.
    segments = len(list(spool.glob("segment-*")))

    other, other_tokens = new_registry(tmp_path / "other-registry")
    try:
        stranger = start_following_proxy(
            tmp_path / "stranger", other, other_tokens["proxy"], upstreams, "--source", source,
            "--spool-dir", str(spool),
        )  # fmt: skip
        try:
            wait_ready(stranger)
            deadline = time.monotonic() + 15
            metrics = ""
            while f"sharewall_spool_foreign_segments {segments}.0" not in metrics:
                assert time.monotonic() < deadline, metrics
                metrics = requests.get(f"{stranger.admin_url}/metrics", timeout=5).text
                time.sleep(0.2)
        finally:
            stranger.stop()
        assert flows_of(other, other_tokens["security"], source) == []
        assert "shipper.foreign_segment_kept" in stranger.log_text()
    finally:
        other.stop()

    heir = start_following_proxy(
        tmp_path / "heir", reg, tokens["proxy"], upstreams, "--source", source,
        "--spool-dir", str(spool),
    )  # fmt: skip
    try:
        wait_ready(heir)
        flows = wait_for_flows(reg, tokens["security"], source, 5)
    finally:
        heir.stop()
    assert sorted(f["decision_id"] for f in flows) == ids


def test_personal_data_in_urls_is_replaced_by_its_category_in_every_record(
    registry, upstreams, tmp_path
):
    reg, tokens = registry
    source = f"url-{uuid.uuid4().hex[:6]}"
    proxy = start_following_proxy(tmp_path, reg, tokens["proxy"], upstreams, "--source", source)
    digits = PHONE.lstrip("+")
    try:
        wait_ready(proxy)
        url = (
            f"http://api.vendor.test:{upstreams.http_port}/lookup/%2B{digits}"
            f"?phone=%2B{digits}&country=SG"
        )
        resp = proxy.session().get(url, timeout=10)
        assert resp.status_code == 403  # a phone number over plain HTTP
        decision_id = resp.json()["decision_id"]
        line = proxy.decision(decision_id)
        on_disk = [r for r in spooled_records(proxy.spool_dir) if r["decision_id"] == decision_id]
        [flow] = wait_for_flows(reg, tokens["security"], source, 1)
    finally:
        proxy.stop()
    expected = "/lookup/[contact.phone_number]?phone=[contact.phone_number]&country=SG"
    assert line["path"] == expected
    assert flow["path"] == expected and flow["decision_id"] == decision_id
    assert all(r["path"] == expected for r in on_disk)
    # Nowhere: not in the log, the spool, the registry's answer.
    assert digits not in proxy.log_text()
    assert digits not in orjson.dumps(on_disk).decode()
    assert digits not in orjson.dumps(flow).decode()
    assert digits not in api(reg, tokens["security"], "GET", f"/v1/flows/{decision_id}").text


def test_a_full_spool_disk_fails_closed_says_why_and_loses_or_doubles_nothing(
    registry, upstreams, tmp_path
):
    reg, tokens = registry
    source = f"full-{uuid.uuid4().hex[:6]}"
    with tiny_tmpfs(tmp_path / "disk", "512k") as disk:
        proxy = start_following_proxy(
            tmp_path / "proxy", reg, tokens["proxy"], upstreams, "--source", source,
            "--spool-dir", str(disk / "spool"),
        )  # fmt: skip
        try:
            wait_ready(proxy)
            session = proxy.session()
            before = [blocked_call(session, upstreams, "before") for _ in range(5)]
            assert [r.status_code for r in before] == [403] * 5
            filler = fill(disk)
            during: list[requests.Response] = []
            for _ in range(40):  # the open segment's last page may still take a record or two
                during.append(blocked_call(session, upstreams, "during"))
                if during[-1].status_code == 503:
                    break
            refused = during[-1]
            assert refused.status_code == 503, [r.status_code for r in during]
            assert refused.json()["error"] == "egress_unavailable"
            assert upstreams.find(refused.json()["decision_id"]) == []
            readyz = requests.get(f"{proxy.admin_url}/readyz", timeout=5)
            assert readyz.status_code == 503
            assert any("ENOSPC" in reason for reason in readyz.json()["reasons"])
            line = proxy.decision(refused.json()["decision_id"])
            assert (line["fault"], line["status"]) == ("spool_unavailable", 503)

            filler.unlink()
            wait_ready(proxy, timeout=20)
            after = [blocked_call(session, upstreams, "after") for _ in range(5)]
            assert [r.status_code for r in after] == [403] * 5
            answered = [r for r in (*before, *during, *after)]
            expected = {r.json()["decision_id"]: r.status_code for r in answered}
            flows = wait_for_flows(reg, tokens["security"], source, len(expected))
        finally:
            proxy.stop()
    stored = {f["decision_id"]: f for f in flows}
    assert len(flows) == len(stored) == len(expected)  # each once: none lost, none doubled
    assert {d: f["status"] for d, f in stored.items()} == expected
    assert {f["fault"] for f in flows if f["status"] == 503} == {"spool_unavailable"}
    log = proxy.log_text()
    assert "corrupt_line" not in log and "records_rejected" not in log
