"""A registry refusing a proxy's shipments is seen on the proxy: a real `sharewall proxy`
shipping to a real `sharewall registry serve`.

The shipper retries a refusal (an admin can fix it without restarting the proxy), and while
it lasts says so: a `shipper.refused` line with the registry's reason code, the counter
`sharewall_shipper_refusals_total{reason}` and the gauge `sharewall_shipping_refused{reason}`,
and a notice on `/readyz`, which stays 200 (the proxy still decides every call and spools the
records). A rotated token's expiry, which the registry sends in `Sharewall-Token-Expires`, is
logged and shown the same way.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from proxy_harness import ProxyProcess, Upstreams
from registry_harness import RegistryProcess, api, ship, start_following_proxy
from registry_harness import wait_ready as wait_until_ready

pytestmark = pytest.mark.timeout(300)


def samples(proxy: ProxyProcess, name: str) -> dict[str, float]:
    """The samples of one metric on the proxy's admin port, by their `reason` label."""
    text = requests.get(f"{proxy.admin_url}/metrics", timeout=5).text
    return {
        s.labels.get("reason", ""): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    }


def readiness(proxy: ProxyProcess) -> tuple[int, dict]:
    resp = requests.get(f"{proxy.admin_url}/readyz", timeout=5)
    return resp.status_code, resp.json()


def blocked_call(proxy: ProxyProcess, upstreams: Upstreams) -> None:
    """A call to a host no recipient has: denied, so its record goes to the spool and out."""
    resp = proxy.session().post(
        f"http://api.unknown.test:{upstreams.http_port}/refused/{uuid.uuid4().hex[:8]}",
        data=b"{}",
        timeout=15,
    )
    assert resp.status_code == 403, resp.text


def event(proxy: ProxyProcess, name: str, timeout: float = 60, **fields) -> dict:
    lines = proxy.lines_where(
        lambda line: line.get("event") == name and fields.items() <= line.items(),
        timeout=timeout,
    )
    assert lines, f"no {name} {fields} line:\n{proxy.log_text()[-3000:]}"
    return lines[-1]


def bind(reg: RegistryProcess, token: str, *proxy_ids: str) -> None:
    """Ship nothing as each proxy id with `token` (another pod's): they are bound to it."""
    for proxy_id in proxy_ids:
        ship(reg, token, {"proxy_id": proxy_id, "decisions": []})


def test_refusals_and_an_expiring_token_are_logged_counted_and_noticed(
    admin_registry, upstreams, tmp_path, monkeypatch
):
    reg, tokens = admin_registry
    admin = tokens["admin"]
    pod = f"pod-{uuid.uuid4().hex[:8]}"
    bind(reg, tokens["proxy"], pod)
    created = api(reg, admin, "POST", "/v1/tokens", json={"name": pod, "role": "proxy"}).json()
    monkeypatch.setenv("SHAREWALL_PROXY_ID", pod)
    proxy = start_following_proxy(tmp_path, reg, created["secret"], upstreams)
    try:
        wait_until_ready(proxy)
        assert readiness(proxy) == (200, {"status": "ready"})

        # 403 proxy-id-bound: retried, and visible.
        blocked_call(proxy, upstreams)
        line = event(proxy, "shipper.refused", reason="proxy-id-bound")
        assert (line["status"], line["proxy_id"], line["level"]) == (403, pod, "error")
        assert pod in line["detail"] and created["secret"] not in proxy.log_text()
        assert samples(proxy, "sharewall_shipper_refusals_total")["proxy-id-bound"] >= 1
        assert samples(proxy, "sharewall_shipping_refused") == {"proxy-id-bound": 1.0}
        status, ready = readiness(proxy)
        assert (status, ready["status"]) == (200, "ready")  # it still decides every call
        [notice] = ready["notices"]
        assert "HTTP 403 proxy-id-bound" in notice and pod in notice

        # An admin releases the binding: the next retry ships, and the notice goes.
        assert api(reg, admin, "DELETE", f"/v1/proxy-ids/{pod}").status_code == 204
        event(proxy, "shipper.refusal_over", reason="proxy-id-bound")
        assert samples(proxy, "sharewall_shipping_refused") == {"proxy-id-bound": 0.0}
        assert readiness(proxy) == (200, {"status": "ready"})

        # The token is rotated with a grace: the proxy is told when its secret expires.
        rotated = api(
            reg, admin, "POST", f"/v1/tokens/{created['id']}/rotate", json={"grace_seconds": 900}
        ).json()
        expires = datetime.fromisoformat(rotated["previous"]["expires_at"]).replace(microsecond=0)
        blocked_call(proxy, upstreams)
        line = event(proxy, "registry.token_expiring")
        assert datetime.fromisoformat(line["expires_at"]) == expires
        expiry = samples(proxy, "sharewall_registry_token_expiry_timestamp_seconds")
        assert expiry == {"": expires.timestamp()}
        status, ready = readiness(proxy)
        assert status == 200 and ready["notices"] == [
            f"the registry token expires at {expires.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ} (it "
            "was rotated): give the proxy the new secret before then"
        ]

        # Revoked (the grace ends at once): 401 unauthorized, still retried and visible.
        assert api(reg, admin, "DELETE", f"/v1/tokens/{created['id']}").status_code == 204
        blocked_call(proxy, upstreams)
        line = event(proxy, "shipper.refused", reason="unauthorized")
        assert line["status"] == 401
        assert samples(proxy, "sharewall_shipping_refused") == {
            "proxy-id-bound": 0.0,
            "unauthorized": 1.0,
        }
        status, ready = readiness(proxy)
        assert (status, ready["status"]) == (200, "ready")
        assert ready["notices"][0].startswith("the registry token expires at")
        assert "HTTP 401 unauthorized" in ready["notices"][1]
        # The refused records wait in the spool.
        deadline = time.monotonic() + 10
        while not list(proxy.spool_dir.glob("segment-*.jsonl")):
            assert time.monotonic() < deadline, "no sealed segment kept"
            time.sleep(0.1)
    finally:
        proxy.stop()


def test_the_workers_refusals_reach_the_supervisors_readyz_and_metrics(
    admin_registry, upstreams, tmp_path, monkeypatch
):
    reg, tokens = admin_registry
    pod = f"pod-{uuid.uuid4().hex[:8]}"
    bind(reg, tokens["proxy"], pod, f"{pod}-w1")  # worker 0 ships as the pod, worker 1 as -w1
    created = api(
        reg, tokens["admin"], "POST", "/v1/tokens", json={"name": pod, "role": "proxy"}
    ).json()
    monkeypatch.setenv("SHAREWALL_PROXY_ID", pod)
    proxy = start_following_proxy(tmp_path, reg, created["secret"], upstreams, "--workers", "2")
    try:
        wait_until_ready(proxy)
        blocked_call(proxy, upstreams)
        event(proxy, "shipper.refused", reason="proxy-id-bound")
        assert samples(proxy, "sharewall_shipping_refused")["proxy-id-bound"] >= 1
        status, ready = readiness(proxy)
        assert (status, ready["status"]) == (200, "ready")
        assert any(
            n.startswith(("worker 0: ", "worker 1: ")) and "proxy-id-bound" in n
            for n in ready["notices"]
        ), ready
    finally:
        proxy.stop()
