"""End-to-end: plain-HTTP forward proxying through the real `sharewall proxy` process."""

from __future__ import annotations

import gzip
import http.client
import json
import re
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path

import aiohttp
import httpx
import pytest
import requests
from proxy_harness import PHONE, SECRET_TOKEN, parse_response, raw_exchange, start_proxy


@pytest.fixture(scope="module")
def proxy(tmp_path_factory, certs, upstreams):
    """The proxy as a pod runs it: the injector and the chart set PYTHONOPTIMIZE=2 (`-OO`, no
    docstrings nor asserts loaded), so this module's calls run without them."""
    p = start_proxy(tmp_path_factory.mktemp("proxy"), certs, upstreams, env={"PYTHONOPTIMIZE": "2"})
    environ = Path(f"/proc/{p.proc.pid}/environ").read_bytes().split(b"\0")
    assert b"PYTHONOPTIMIZE=2" in environ
    yield p
    p.stop()


def _marker(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def _session(proxy) -> requests.Session:
    s = requests.Session()
    s.trust_env = False
    s.proxies = {"http": proxy.url, "https": proxy.url}
    return s


def test_allowed_call_is_forwarded_and_logged_once(proxy, upstreams):
    m = _marker("allowed")
    url = f"http://api.vendor.test:{upstreams.http_port}/{m}?page=2"
    r = _session(proxy).get(url, timeout=10)
    assert r.status_code == 200
    assert r.json()["path"] == f"/{m}?page=2"
    [seen] = upstreams.find(m)
    assert seen.method == "GET"
    [line] = proxy.decisions_for(m)
    assert line["action"] == "allow"
    assert line["recipient_id"] == "vendor"
    assert line["status"] == 200
    assert line["source_workload"] == "test-workload"
    assert line["source_namespace"] == "test-ns"
    assert line["purpose"] == "service_delivery"
    assert line["inspected"] is True and line["tunnel"] is False
    assert line["latency_ms"] >= line["policy_ms"] > 0


def test_blocked_call_gets_the_design_403_and_never_reaches_upstream(proxy, upstreams):
    m = _marker("blocked")
    url = f"http://api.vendor.test:{upstreams.http_port}/{m}"
    r = _session(proxy).post(url, data={"To": PHONE, "Body": "hi"}, timeout=10)
    assert r.status_code == 403
    assert r.headers["Content-Type"] == "application/json"
    body = r.json()
    assert set(body) == {"error", "decision_id", "reasons"}
    assert body["error"] == "egress_blocked"
    assert r.headers["X-Sharewall-Decision-Id"] == body["decision_id"]
    assert [x["code"] for x in body["reasons"]] == ["PERSONAL_DATA_IN_CLEARTEXT"]
    assert all(set(x) == {"code", "message"} for x in body["reasons"])
    assert upstreams.find(m) == []
    line = proxy.decision(body["decision_id"])
    assert line["action"] == "deny"
    assert line["reason_codes"] == ["PERSONAL_DATA_IN_CLEARTEXT"]
    assert "contact.phone_number" in line["categories"]
    assert "contact.phone_number@form:To" in line["finding_locations"]
    assert line["status"] == 403


@pytest.mark.parametrize(
    ("host", "purpose", "form", "code"),
    [
        pytest.param("api.unknown.test", None, None, "UNKNOWN_RECIPIENT", id="deny: unknown host"),
        pytest.param(
            "origin.vendor.test", "marketing", None, "PURPOSE_NOT_APPROVED", id="deny: no grant"
        ),
        pytest.param(
            "origin.vendor.test",
            "marketing",
            {"To": PHONE},
            "MOBILE_INFO_FOR_MARKETING",
            id="deny: phone for marketing",
        ),
        pytest.param(
            "origin.vendor.test", "bogus", None, "PURPOSE_UNKNOWN", id="deny: bad purpose"
        ),
    ],
)
def test_blocked_calls_carry_the_policy_reason(proxy, upstreams, host, purpose, form, code):
    m = _marker("reason")
    headers = {"X-Sharewall-Purpose": purpose} if purpose else {}
    url = f"http://{host}:{upstreams.https_port}/{m}"
    r = _session(proxy).post(url, data=form or {"a": "b"}, headers=headers, timeout=10)
    assert r.status_code == 403
    assert code in [x["code"] for x in r.json()["reasons"]]
    assert upstreams.find(m) == []


def test_tls_origination_sends_plain_http_calls_upstream_over_https(proxy, upstreams):
    m = _marker("origination")
    url = f"http://origin.vendor.test:{upstreams.https_port}/{m}"
    r = _session(proxy).post(url, data={"To": PHONE}, timeout=10)
    assert r.status_code == 200
    assert r.json()["scheme"] == "https"
    [seen] = upstreams.find(m)
    assert seen.scheme == "https" and PHONE.encode() in seen.body.replace(b"%2B", b"+")


def test_each_request_names_its_destination_in_host(proxy, upstreams):
    # The Host line is worked out once per upstream connection: calls to two names on pooled
    # connections, alternated, each carry their own (with the port, not a default one).
    m = _marker("host")
    s = _session(proxy)
    for i in range(2):
        for name, port in (
            ("api.vendor.test", upstreams.http_port),
            ("origin.vendor.test", upstreams.https_port),  # TLS origination: 443 stays named
        ):
            r = s.get(f"http://{name}:{port}/{m}/{name}/{i}", timeout=10)
            assert r.status_code == 200
            [seen] = upstreams.find(f"{m}/{name}/{i}")
            assert seen.header("Host") == f"{name}:{port}"


def test_hop_by_hop_and_sharewall_headers_are_stripped_both_ways(proxy, upstreams):
    m = _marker("headers")
    url = f"http://api.vendor.test:{upstreams.http_port}/{m}"
    r = _session(proxy).get(
        url,
        headers={
            "X-Sharewall-Purpose": "service_delivery",
            "X-Sharewall-Debug": "internal",
            "Proxy-Authorization": "Basic dXNlcjpwYXNz",
            "Connection": "keep-alive, X-Private-Hop",
            "X-Private-Hop": "pod-detail",
            "Keep-Alive": "timeout=5",
            "Via": "1.1 pod-7",
            "X-Forwarded-For": "10.1.2.3",
            "X-App": "kept",
        },
        timeout=10,
    )
    assert r.status_code == 200
    [seen] = upstreams.find(m)
    sent = {k.lower() for k, _ in seen.headers}
    for name in (
        "x-sharewall-purpose",
        "x-sharewall-debug",
        "proxy-authorization",
        "x-private-hop",
        "keep-alive",
        "via",
        "x-forwarded-for",
    ):
        assert name not in sent, name
    assert seen.header("X-App") == "kept"
    # Upstream response: its X-Sharewall-* and its hop-by-hop headers never reach the app.
    assert r.headers["X-Upstream"] == "yes"
    assert "X-Sharewall-Spoofed" not in r.headers
    assert "X-Hop" not in r.headers
    assert "Keep-Alive" not in r.headers


def test_only_what_goes_upstream_is_inspected(proxy, upstreams):
    # A header the Connection header names is hop-by-hop: it never leaves the pod, so the
    # phone number in it is shared with no one.
    m = _marker("hop-only")
    url = f"http://api.vendor.test:{upstreams.http_port}/{m}"
    s = _session(proxy)
    hop = s.get(url, headers={"Connection": "X-Msisdn", "X-Msisdn": PHONE}, timeout=10)
    assert hop.status_code == 200
    [seen] = upstreams.find(m)
    assert seen.header("X-Msisdn") is None
    sent = s.get(url + "-sent", headers={"X-Msisdn": PHONE}, timeout=10)
    assert sent.status_code == 403  # the same header, forwarded, is personal data in cleartext


def test_httpx_client_through_the_proxy(proxy, upstreams):
    m = _marker("httpx")
    with httpx.Client(proxy=proxy.url, trust_env=False, timeout=10) as client:
        r = client.get(f"http://api.vendor.test:{upstreams.http_port}/{m}")
    assert r.status_code == 200 and r.json()["path"] == f"/{m}"


async def test_aiohttp_client_through_the_proxy(proxy, upstreams):
    m = _marker("aiohttp")
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://api.vendor.test:{upstreams.http_port}/{m}", proxy=proxy.url) as r,
    ):
        assert r.status == 200
        assert (await r.json())["path"] == f"/{m}"


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_curl_allowed_and_blocked(proxy, upstreams):
    m = _marker("curl")
    base = ["curl", "-s", "-x", proxy.url, "--noproxy", ""]
    ok = subprocess.run(
        [*base, f"http://api.vendor.test:{upstreams.http_port}/{m}"],
        capture_output=True,
        timeout=20,
        check=True,
    )
    assert json.loads(ok.stdout)["path"] == f"/{m}"
    blocked = subprocess.run(
        [*base, "-d", f"To={PHONE}", f"http://api.vendor.test:{upstreams.http_port}/{m}-b"],
        capture_output=True,
        timeout=20,
        check=True,
    )
    assert json.loads(blocked.stdout)["error"] == "egress_blocked"


def test_blocked_reason_names_the_category_the_app_must_drop(proxy, upstreams):
    m = _marker("blocked-category")
    url = f"http://origin.vendor.test:{upstreams.https_port}/{m}"
    r = _session(proxy).post(url, json={"email": "tan.ah.kow@example.com"}, timeout=10)
    assert r.status_code == 403
    [reason] = r.json()["reasons"]
    assert reason["code"] == "CATEGORY_NOT_APPROVED"
    assert reason["category"] == "contact.email"
    assert upstreams.find(m) == []


def test_keep_alive_serves_several_requests_on_one_connection(proxy, upstreams):
    m = _marker("keepalive")
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    try:
        for i in range(3):
            conn.request("GET", f"http://api.vendor.test:{upstreams.http_port}/{m}/{i}")
            r = conn.getresponse()
            assert r.status == 200
            assert json.loads(r.read())["path"] == f"/{m}/{i}"
        sock = conn.sock
        conn.request("POST", f"http://api.vendor.test:{upstreams.http_port}/{m}/x", body=PHONE)
        r = conn.getresponse()
        assert r.status == 403
        r.read()
        conn.request("GET", f"http://api.vendor.test:{upstreams.http_port}/{m}/after")
        assert conn.getresponse().status == 200
        assert conn.sock is sock  # the same client connection all along
    finally:
        conn.close()


def test_keep_alive_responses_are_not_held_back_by_nagle(proxy, upstreams):
    # Without TCP_NODELAY on the client socket each keep-alive response waited ~40 ms for the
    # client's delayed ACK, every one of them: the fastest of the kept-alive calls shows it
    # (a median could cross 30 ms on a loaded machine; all six of them hardly).
    m = _marker("nagle")
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    times = []
    try:
        for i in range(7):
            started = time.perf_counter()
            conn.request("GET", f"http://api.vendor.test:{upstreams.http_port}/{m}/{i}")
            conn.getresponse().read()
            times.append(time.perf_counter() - started)
    finally:
        conn.close()
    assert min(times[1:]) < 0.030


def test_pipelined_requests_are_answered_in_order(proxy, upstreams):
    m = _marker("pipelined")
    port = upstreams.http_port

    def request(i: int, extra: str = "") -> bytes:
        return (
            f"GET http://api.vendor.test:{port}/{m}/{i} HTTP/1.1\r\n"
            f"Host: api.vendor.test:{port}\r\n{extra}\r\n"
        ).encode()

    raw = raw_exchange(proxy.port, request(1) + request(2) + request(3, "Connection: close\r\n"))
    assert raw.count(b"HTTP/1.1 200 OK") == 3
    order = re.findall(rf'"path": "/{m}/(\d)"'.encode(), raw)
    assert order == [b"1", b"2", b"3"]


def test_http10_client_gets_a_close_delimited_http10_answer(proxy, upstreams):
    m = _marker("h10")
    raw = raw_exchange(
        proxy.port,
        f"GET http://api.vendor.test:{upstreams.http_port}/{m} HTTP/1.0\r\n\r\n".encode(),
    )
    assert raw.startswith(b"HTTP/1.0 200")
    _status, headers, body = parse_response(raw)
    assert headers["connection"] == "close"
    assert json.loads(body)["path"] == f"/{m}"


def test_chunked_request_body_and_expect_continue(proxy, upstreams):
    m = _marker("chunked")
    head = (
        f"POST http://api.vendor.test:{upstreams.http_port}/{m} HTTP/1.1\r\n"
        f"Host: api.vendor.test:{upstreams.http_port}\r\n"
        "Transfer-Encoding: chunked\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as s:
        s.sendall(head)
        assert s.recv(100).startswith(b"HTTP/1.1 100 Continue")
        s.sendall(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        raw = b""
        while chunk := s.recv(65536):
            raw += chunk
    status, _, _ = parse_response(raw)
    assert status == 200
    [seen] = upstreams.find(m)
    assert seen.body == b"hello world"


def test_head_204_and_streamed_chunked_responses_are_framed(proxy, upstreams):
    m = _marker("framing")
    s = _session(proxy)
    base = f"http://api.vendor.test:{upstreams.http_port}"
    head = s.head(f"{base}/{m}", timeout=10)
    assert head.status_code == 200 and head.content == b""
    assert s.get(f"{base}/nocontent/{m}", timeout=10).status_code == 204
    streamed = s.get(f"{base}/stream/{m}", timeout=10, stream=True)
    assert streamed.headers.get("Transfer-Encoding") == "chunked"
    body = b"".join(streamed.iter_content(None))
    assert body == b"".join(f"chunk-{i};".encode() * 1000 for i in range(5))
    # The connection is still usable after the chunked body.
    assert s.get(f"{base}/{m}-after", timeout=10).status_code == 200


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        pytest.param(b"x" * (8 << 20), {}, id="body far over the inspection limit"),
        pytest.param(
            gzip.compress(b"0" * (64 << 20), compresslevel=9),
            {"Content-Encoding": "gzip", "Content-Type": "text/plain"},
            id="gzip bomb",
        ),
    ],
)
def test_uninspectable_body_is_blocked_and_upstream_sees_nothing(proxy, upstreams, body, headers):
    m = _marker("incomplete")
    url = f"http://origin.vendor.test:{upstreams.https_port}/{m}"
    r = _session(proxy).post(url, data=body, headers=headers, timeout=30)
    assert r.status_code == 403
    assert "INSPECTION_INCOMPLETE" in [x["code"] for x in r.json()["reasons"]]
    assert upstreams.find(m) == []


def test_logs_never_carry_secrets_or_finding_values(proxy, upstreams):
    m = _marker("secrets")
    url = (
        f"http://api.vendor.test:{upstreams.http_port}/{m}"
        f"?access_token={SECRET_TOKEN}&signature={SECRET_TOKEN}&page=1"
    )
    r = _session(proxy).post(
        url,
        data={"To": PHONE},
        headers={"Authorization": f"Bearer {SECRET_TOKEN}", "X-Api-Key": SECRET_TOKEN},
        timeout=10,
    )
    assert r.status_code == 403
    line = proxy.decision(r.headers["X-Sharewall-Decision-Id"])
    assert "access_token=REDACTED" in line["path"] and "page=1" in line["path"]
    text = proxy.log_text()
    assert SECRET_TOKEN not in text
    assert PHONE not in text and PHONE[1:] not in text


def test_a_password_in_the_query_is_inspected_though_logged_redacted(proxy, upstreams):
    m = _marker("query-secret")
    url = f"http://api.vendor.test:{upstreams.http_port}/{m}?password=hunter2xyz"
    r = _session(proxy).get(url, timeout=10)
    assert r.status_code == 403
    assert "CATEGORY_NOT_APPROVED" in [x["code"] for x in r.json()["reasons"]]
    line = proxy.decision(r.headers["X-Sharewall-Decision-Id"])
    assert line["categories"] == ["credentials.secret"]
    assert line["path"] == f"/{m}?password=REDACTED"
    assert "hunter2xyz" not in proxy.log_text()


def test_blocked_decisions_are_spooled_before_the_403_leaves(proxy, upstreams):
    m = _marker("spool")
    r = _session(proxy).post(
        f"http://api.vendor.test:{upstreams.http_port}/{m}", data={"To": PHONE}, timeout=10
    )
    assert r.status_code == 403
    decision_id = r.headers["X-Sharewall-Decision-Id"]
    # No waiting: the record was fsync'd to the spool before the answer was written.
    records = [
        rec
        for path in sorted(proxy.spool_dir.glob("segment-*"))
        for rec in map(json.loads, path.read_text().splitlines())
        if rec.get("decision_id") == decision_id
    ]
    [rec] = records
    assert rec["reasons"][0]["code"] == "PERSONAL_DATA_IN_CLEARTEXT"
    assert rec["findings"][0]["category"] == "contact.phone_number"
    assert rec["time"].endswith("+00:00") and rec["status"] == 403
    assert PHONE not in json.dumps(rec)


def test_admin_endpoints_report_health_readiness_and_metrics(proxy, upstreams):
    blocked = _session(proxy).post(
        f"http://api.vendor.test:{upstreams.http_port}/metrics-check", data={"To": PHONE}
    )
    assert blocked.status_code == 403
    s = requests.Session()
    s.trust_env = False
    assert s.get(f"{proxy.admin_url}/healthz", timeout=5).status_code == 200
    assert s.get(f"{proxy.admin_url}/readyz", timeout=5).json() == {"status": "ready"}
    metrics = s.get(f"{proxy.admin_url}/metrics", timeout=5).text
    assert 'sharewall_decisions_total{action="deny",reason="PERSONAL_DATA_IN_CLEARTEXT"}' in metrics
    assert "sharewall_policy_seconds_bucket" in metrics
    for name in (
        "sharewall_inflight_requests",
        "sharewall_open_tunnels",
        "sharewall_open_connections",
        "sharewall_inspection_seconds_bucket",
        "sharewall_upstream_seconds_bucket",
        "sharewall_decision_cache_hits_total",
        'sharewall_snapshot_reloads_total{result="ok"} 1.0',
    ):
        assert name in metrics, name
