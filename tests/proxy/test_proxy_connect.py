"""End-to-end: CONNECT tunnels, intercepted (inspected inside) or spliced (decided up front)."""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import ssl
import subprocess
import uuid

import httpx
import pytest
import requests
from proxy_harness import PHONE, parse_response, raw_exchange


def _marker(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def _session(proxy, verify) -> requests.Session:
    s = requests.Session()
    s.trust_env = False
    s.proxies = {"http": proxy.url, "https": proxy.url}
    s.verify = str(verify)
    return s


def test_intercepted_tunnel_inspects_and_forwards_each_request(proxy, upstreams, certs):
    m = _marker("intercepted")
    s = _session(proxy, certs.proxy_ca_cert)  # the app trusts the proxy's CA
    url = f"https://api.vendor.test:{upstreams.https_port}/{m}"
    first = s.post(url, data={"To": PHONE}, timeout=10)
    second = s.get(f"{url}/again", timeout=10)
    assert first.status_code == 200 and second.status_code == 200
    assert first.json()["scheme"] == "https"
    assert [x.method for x in upstreams.find(m)] == ["POST", "GET"]
    lines = proxy.decisions_for(m, count=2)
    assert len(lines) == 2
    post = next(x for x in lines if x["method"] == "POST")
    assert post["inspected"] is True and post["tunnel"] is True
    assert post["categories"] == ["contact.phone_number"]
    assert post["recipient_id"] == "vendor"


def test_intercepted_tunnel_blocks_a_request_inside_it(proxy, upstreams, certs):
    m = _marker("intercepted-blocked")
    s = _session(proxy, certs.proxy_ca_cert)
    r = s.post(
        f"https://api.vendor.test:{upstreams.https_port}/{m}",
        data={"To": PHONE},
        headers={"X-Sharewall-Purpose": "marketing"},
        timeout=10,
    )
    assert r.status_code == 403
    codes = [x["code"] for x in r.json()["reasons"]]
    assert "MOBILE_INFO_FOR_MARKETING" in codes
    assert r.headers["X-Sharewall-Decision-Id"] == r.json()["decision_id"]
    assert upstreams.find(m) == []


def test_httpx_trusting_the_proxy_ca_through_an_intercepted_tunnel(proxy, upstreams, certs):
    m = _marker("httpx-tls")
    ctx = ssl.create_default_context(cafile=str(certs.proxy_ca_cert))
    with httpx.Client(proxy=proxy.url, verify=ctx, trust_env=False, timeout=10) as client:
        r = client.get(f"https://api.vendor.test:{upstreams.https_port}/{m}")
    assert r.status_code == 200 and r.json()["path"] == f"/{m}"


def test_spliced_tunnel_is_decided_on_recipient_and_purpose(proxy, upstreams, certs):
    m = _marker("spliced")
    # Not intercepted: the app sees the upstream's own certificate.
    s = _session(proxy, certs.upstream_ca)
    r = s.get(f"https://tunnel.vendor.test:{upstreams.https_port}/{m}", timeout=10)
    assert r.status_code == 200
    assert upstreams.find(m)
    connects = proxy.lines_where(
        lambda x: (
            x.get("event") == "egress.decision"
            and x["method"] == "CONNECT"
            and x["host"] == "tunnel.vendor.test"
        )
    )
    assert connects and connects[-1]["inspected"] is False
    assert connects[-1]["action"] == "allow" and connects[-1]["status"] == 200


def test_spliced_tunnel_to_an_affiliate_is_uninspected_high_risk(proxy, upstreams):
    target = f"partner.affiliate.test:{upstreams.https_port}"
    raw = raw_exchange(proxy.port, f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    status, headers, body = parse_response(raw)
    assert status == 403
    doc = json.loads(body)
    assert [x["code"] for x in doc["reasons"]] == ["UNINSPECTED_HIGH_RISK"]
    assert headers["x-sharewall-decision-id"] == doc["decision_id"]
    line = proxy.decision(doc["decision_id"])
    assert line["method"] == "CONNECT" and line["tunnel"] is True and line["inspected"] is False


def test_connect_to_an_unknown_host_is_blocked_before_any_dns(proxy):
    raw = raw_exchange(
        proxy.port, b"CONNECT nowhere.invalid:443 HTTP/1.1\r\nHost: nowhere.invalid:443\r\n\r\n"
    )
    status, _, body = parse_response(raw)
    assert status == 403
    assert [x["code"] for x in json.loads(body)["reasons"]] == ["UNKNOWN_RECIPIENT"]


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_curl_through_an_intercepted_tunnel(proxy, upstreams, certs):
    m = _marker("curl-tls")
    out = subprocess.run(
        [
            "curl",
            "-s",
            "--noproxy",
            "",
            "-x",
            proxy.url,
            "--cacert",
            str(certs.proxy_ca_cert),
            f"https://api.vendor.test:{upstreams.https_port}/{m}",
        ],
        capture_output=True,
        timeout=20,
        check=True,
    )
    assert json.loads(out.stdout)["path"] == f"/{m}"


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_purpose_declared_on_connect_applies_inside_the_tunnel(proxy, upstreams, certs):
    m = _marker("connect-purpose")
    out = subprocess.run(
        [
            "curl",
            "-s",
            "--noproxy",
            "",
            "-x",
            proxy.url,
            "--proxy-header",
            "X-Sharewall-Purpose: marketing",
            "--cacert",
            str(certs.proxy_ca_cert),
            "-d",
            f"To={PHONE}",
            f"https://api.vendor.test:{upstreams.https_port}/{m}",
        ],
        capture_output=True,
        timeout=20,
        check=True,
    )
    doc = json.loads(out.stdout)
    assert doc["error"] == "egress_blocked"
    assert "MOBILE_INFO_FOR_MARKETING" in [x["code"] for x in doc["reasons"]]
    assert proxy.decision(doc["decision_id"])["purpose"] == "marketing"
    assert upstreams.find(m) == []


def test_intercepted_connect_whose_tls_handshake_fails_has_a_decision_line(proxy, upstreams):
    # The app is answered 200, then does not speak TLS to the minted leaf (an app that does
    # not trust the proxy's CA fails the same way): its call never happens, and the CONNECT's
    # line says so, as a fault, with the status the app got.
    purpose = _marker("handshake")
    target = f"api.vendor.test:{upstreams.https_port}"
    connect = (
        f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nX-Sharewall-Purpose: {purpose}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(connect.encode())
        assert sock.recv(4096).startswith(b"HTTP/1.1 200 ")
        sock.sendall(b"\x00\x01 neither a ClientHello nor HTTP\r\n\r\n")
        sock.recv(4096)  # a TLS alert or nothing, then the close
    [line] = proxy.lines_where(
        lambda x: x.get("event") == "egress.decision" and x.get("purpose") == purpose
    )
    assert line["method"] == "CONNECT" and line["host"] == "api.vendor.test"
    assert line["action"] == "deny" and line["fault"] == "tls_handshake_failed"
    assert line["status"] == 200 and line["recipient_id"] == "vendor" and line["tunnel"] is True


def _inside_intercepted_tunnel(proxy, certs, target: str, request: bytes) -> bytes:
    """`request` sent inside an intercepted CONNECT to `target`; the answer, read to the end."""
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
        assert sock.recv(4096).startswith(b"HTTP/1.1 200 ")
        context = ssl.create_default_context(cafile=str(certs.proxy_ca_cert))
        with context.wrap_socket(sock, server_hostname=target.split(":")[0]) as tls:
            tls.sendall(request)
            raw = b""
            while chunk := tls.recv(65536):
                raw += chunk
    return raw


@pytest.mark.parametrize(
    ("origin", "status"),
    [
        pytest.param("https://api.vendor.test:{port}", 200, id="the tunnel's origin"),
        pytest.param("https://origin.vendor.test:{port}", 400, id="another host"),
        pytest.param("http://api.vendor.test:{port}", 400, id="another scheme"),
    ],
)
def test_absolute_form_inside_a_tunnel_names_only_its_origin(
    proxy, upstreams, certs, origin, status
):
    # RFC 9112 §3.2.2: a server accepts the absolute-form, though clients send it to proxies.
    m = _marker("absolute-in-tunnel")
    target = f"api.vendor.test:{upstreams.https_port}"
    url = origin.format(port=upstreams.https_port) + f"/{m}"
    request = f"GET {url} HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n"
    got, _, body = parse_response(
        _inside_intercepted_tunnel(proxy, certs, target, request.encode())
    )
    assert got == status, body
    assert [seen.path for seen in upstreams.find(m)] == ([f"/{m}"] if status == 200 else [])


def test_plain_http_inside_an_intercepted_connect_is_an_inspected_http_call(proxy, upstreams):
    # Clients may tunnel http:// URLs too (http.client's set_tunnel, undici's ProxyAgent):
    # plain requests inside the CONNECT are decided as http:// calls to its origin, kept alive.
    m = _marker("plain-in-tunnel")
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    conn.set_tunnel(f"api.vendor.test:{upstreams.http_port}")
    try:
        conn.request("GET", f"/{m}/first")
        first = conn.getresponse()
        assert first.status == 200 and json.loads(first.read())["scheme"] == "http"
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        conn.request("POST", f"/{m}/cleartext", body=f"To={PHONE}", headers=form)
        blocked = conn.getresponse()
        reasons = json.loads(blocked.read())["reasons"]
    finally:
        conn.close()
    assert blocked.status == 403
    assert [x["code"] for x in reasons] == ["PERSONAL_DATA_IN_CLEARTEXT"]
    assert [x.path for x in upstreams.find(m)] == [f"/{m}/first"]
    lines = proxy.decisions_for(m, count=2)
    assert sorted((x["method"], x["action"], x["tunnel"], x["inspected"]) for x in lines) == [
        ("GET", "allow", True, True),
        ("POST", "deny", True, True),
    ]


# Node's http module through a CONNECT tunnel, as proxy agents for it (https-proxy-agent,
# global-agent) and undici's ProxyAgent do for http:// URLs: the request rides the tunnel's socket.
_NODE_TUNNELED = r"""
const http = require('http');
const [proxyPort, authority, path] = process.argv.slice(1);
const connect = http.request({host: '127.0.0.1', port: +proxyPort, method: 'CONNECT', path: authority});
connect.on('connect', (res, socket) => {
  const [host, port] = authority.split(':');
  const req = http.request({host, port: +port, path, createConnection: () => socket}, (answer) => {
    let body = '';
    answer.on('data', (d) => (body += d));
    answer.on('end', () => { console.log(JSON.stringify({status: answer.statusCode, body})); socket.destroy(); });
  });
  req.end();
});
connect.end();
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="node not installed")
def test_node_http_through_an_intercepted_connect(proxy, upstreams):
    m = _marker("node-tunnel")
    out = subprocess.run(
        [
            "node",
            "-e",
            _NODE_TUNNELED,
            str(proxy.port),
            f"api.vendor.test:{upstreams.http_port}",
            f"/{m}",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    answer = json.loads(out.stdout)
    assert answer["status"] == 200 and json.loads(answer["body"])["path"] == f"/{m}"
    assert [line["action"] for line in proxy.decisions_for(m)] == ["allow"]


def test_a_spliced_tunnel_half_closed_by_the_app_still_carries_the_answer(proxy, upstreams):
    # The app shuts its side down after its request (Go's CloseWrite, `nc -N`): the upstream
    # is told (its read ends) and its answer still comes back before the tunnel closes.
    m = _marker("tunnel-half-close")
    target = f"tunnel.vendor.test:{upstreams.raw_port}"
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
        assert sock.recv(4096).startswith(b"HTTP/1.1 200 ")
        sock.sendall(f"GET /{m} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
        sock.shutdown(socket.SHUT_WR)
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    assert raw == b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    assert [seen.path for seen in upstreams.find(m)] == [f"/{m}"]
