"""End-to-end: forbidden destinations (SSRF guard) and malformed requests, on raw sockets."""

from __future__ import annotations

import contextlib
import json
import select
import socket
import uuid

import pytest
from proxy_harness import parse_response, raw_exchange


def _get(target: str, host: str | None = None) -> bytes:
    host = host if host is not None else target.split("/")[2]
    return f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()


@pytest.mark.parametrize(
    "target",
    [
        pytest.param("http://127.0.0.1:{http}/{m}", id="loopback literal, not pinned"),
        pytest.param("http://localhost:{http}/{m}", id="localhost"),
        pytest.param("http://0177.0.0.1:{http}/{m}", id="octal loopback literal"),
        pytest.param("http://2130706433:{http}/{m}", id="integer loopback literal"),
        pytest.param("http://[::ffff:127.0.0.1]:{http}/{m}", id="v4-mapped v6 loopback"),
        pytest.param("http://169.254.169.254/latest/meta-data/{m}", id="metadata address"),
        pytest.param("http://10.1.2.3/{m}", id="rfc1918"),
        pytest.param("http://100.64.0.1/{m}", id="cgnat"),
        pytest.param("http://[fd00::1]/{m}", id="ipv6 ula"),
    ],
)
def test_forbidden_destinations_are_refused_before_any_connection(proxy, upstreams, target):
    m = f"guard-{uuid.uuid4().hex[:8]}"
    url = target.format(http=upstreams.http_port, m=m)
    status, headers, body = parse_response(raw_exchange(proxy.port, _get(url)))
    assert status == 403
    doc = json.loads(body)
    assert doc["error"] == "egress_blocked"
    assert [x["code"] for x in doc["reasons"]] == ["DESTINATION_FORBIDDEN"]
    assert headers["x-sharewall-decision-id"] == doc["decision_id"]
    assert upstreams.find(m) == []
    line = proxy.decision(doc["decision_id"])
    assert line["reason_codes"] == ["DESTINATION_FORBIDDEN"] and line["status"] == 403


@pytest.mark.parametrize(
    "authority",
    [
        pytest.param("169.254.169.254:443", id="metadata"),
        pytest.param("127.0.0.1:22", id="loopback ssh"),
        pytest.param("localhost:443", id="localhost"),
    ],
)
def test_connect_to_a_forbidden_destination_is_refused(proxy, authority):
    raw = raw_exchange(
        proxy.port, f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode()
    )
    status, _, body = parse_response(raw)
    assert status == 403
    assert [x["code"] for x in json.loads(body)["reasons"]] == ["DESTINATION_FORBIDDEN"]


def test_the_proxy_itself_is_a_forbidden_destination(proxy):
    raw = raw_exchange(proxy.port, _get(f"http://127.0.0.1:{proxy.port}/loop"))
    status, _, body = parse_response(raw)
    assert status == 403
    assert [x["code"] for x in json.loads(body)["reasons"]] == ["DESTINATION_FORBIDDEN"]


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        pytest.param(b"HELLO THERE\r\n\r\n", 400, id="garbage request line"),
        pytest.param(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400, id="tls to plain port"),
        pytest.param(
            b"GET http://api.vendor.test:99999/ HTTP/1.1\r\nHost: api.vendor.test:99999\r\n\r\n",
            400,
            id="port out of range",
        ),
        pytest.param(
            b"GET http://api.vendor.test:8x/ HTTP/1.1\r\nHost: api.vendor.test\r\n\r\n",
            400,
            id="non-numeric port",
        ),
        pytest.param(
            b"GET http://api.vendor.test/ HTTP/1.1\r\nHost: evil example\r\n\r\n",
            400,
            id="malformed host header",
        ),
        pytest.param(
            b"GET http://user:pw@api.vendor.test/ HTTP/1.1\r\nHost: api.vendor.test\r\n\r\n",
            400,
            id="userinfo in authority",
        ),
        pytest.param(b"GET / HTTP/1.1\r\nHost: api.vendor.test\r\n\r\n", 400, id="origin-form"),
        pytest.param(
            b"POST http://api.vendor.test/ HTTP/1.1\r\nHost: api.vendor.test\r\n"
            b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
            id="content-length with chunked (smuggling)",
        ),
        pytest.param(
            b"GET http://api.vendor.test/ HTTP/1.1\r\nHost: api.vendor.test\r\n"
            b"Upgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            400,
            id="protocol upgrade",
        ),
        pytest.param(
            b"GET ftp://api.vendor.test/ HTTP/1.1\r\nHost: api.vendor.test\r\n\r\n",
            400,
            id="unsupported scheme",
        ),
        pytest.param(
            b"GET http://api.vendor.test/ HTTP/1.1\r\nHost: api.vendor.test\r\n"
            b"Host: evil.example\r\n\r\n",
            400,
            id="two Host headers",
        ),
        pytest.param(
            b"POST http://api.vendor.test/ HTTP/1.0\r\nHost: api.vendor.test\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
            id="chunked in HTTP/1.0",
        ),
        pytest.param(
            b"POST http://api.vendor.test/ HTTP/1.1\r\nHost: api.vendor.test\r\n"
            b"Transfer-Encoding: identity, chunked\r\n\r\n0\r\n\r\n",
            501,
            id="transfer coding other than chunked",
        ),
        pytest.param(
            b"POST http://api.vendor.test/ HTTP/1.1\r\nHost: api.vendor.test\r\n"
            b"Transfer-Encoding: deflate\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            501,
            id="transfer coding other than chunked, in a field of its own",
        ),
        pytest.param(
            b"POST http://api.vendor.test/ HTTP/1.1\r\nHost: api.vendor.test\r\n"
            b"Connection: Upgrade\r\nUpgrade: h2c\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n0\r\n\r\n",
            400,
            id="chunked body with an Upgrade (httptools reads none)",
        ),
        pytest.param(
            b"GET http://api.vendor.test/ HTTP/2.0\r\nHost: api.vendor.test\r\n\r\n",
            505,
            id="HTTP/2.0 request line",
        ),
        # llhttp keeps these alive (a Connection field asks for it), as it does HTTP/1.1: the
        # version is still read, never taken for 1.1.
        pytest.param(
            b"GET http://api.vendor.test/ HTTP/2.0\r\nHost: api.vendor.test\r\n"
            b"Connection: keep-alive\r\n\r\n",
            505,
            id="HTTP/2.0 request line, keep-alive",
        ),
        pytest.param(
            b"GET http://api.vendor.test/ HTTP/0.9\r\nHost: api.vendor.test\r\n\r\n",
            505,
            id="HTTP/0.9 request line",
        ),
        pytest.param(
            b"GET http://api.vendor.test/ HTTP/0.9\r\nHost: api.vendor.test\r\n"
            b"Proxy-Connection: keep-alive\r\n\r\n",
            505,
            id="HTTP/0.9 request line, proxy keep-alive",
        ),
        pytest.param(
            b"GET http://api.vendor.test/" + b"a" * (40 * 1024) + b" HTTP/1.1\r\n"
            b"Host: api.vendor.test\r\n\r\n",
            414,
            id="request target over the head limit",
        ),
        pytest.param(b"CONNECT [::1:443 HTTP/1.1\r\nHost: x\r\n\r\n", 400, id="unbalanced bracket"),
        pytest.param(b"CONNECT :443 HTTP/1.1\r\nHost: x\r\n\r\n", 400, id="empty host"),
        pytest.param(
            b"GET http://api.vendor.test/ HTTP/1.1\r\nHost: api.vendor.test\r\nX-Big: "
            + b"a" * (40 * 1024)
            + b"\r\n\r\n",
            431,
            id="oversized header",
        ),
    ],
)
def test_malformed_requests_get_a_json_error(proxy, request_bytes, status):
    got, headers, body = parse_response(raw_exchange(proxy.port, request_bytes))
    assert got == status
    assert headers["content-type"] == "application/json"
    doc = json.loads(body)
    errors = {414: "uri_too_long", 431: "headers_too_large", 501: "unsupported", 505: "unsupported"}
    assert doc["error"] == errors.get(status, "bad_request")
    assert doc["message"]


def test_a_refused_head_request_gets_its_error_without_a_body(proxy):
    """RFC 9110 §9.3.2: the answer to HEAD has no content, even an error (its length is said)."""
    raw = raw_exchange(
        proxy.port, b"HEAD http://api.vendor.test/ HTTP/1.1\r\nHost: evil example\r\n\r\n"
    )
    status, headers, body = parse_response(raw)
    assert status == 400
    assert headers["connection"] == "close"
    assert int(headers["content-length"]) > 0  # what a GET's error would carry
    assert body == b""


def test_a_head_over_the_limit_that_trickles_in_is_refused_431(proxy):
    """Each piece is far under the head limit; the head they add up to is not."""
    header = b"X-Piece: " + b"a" * 1000 + b"\r\n"
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as s:
        s.sendall(b"GET http://api.vendor.test/ HTTP/1.1\r\nHost: api.vendor.test\r\n")
        for _ in range(40):  # 40 KB of headers against the 32 KB limit
            s.sendall(header)
            if select.select([s], [], [], 0.01)[0]:
                break  # answered: stop sending (bytes sent to a closed socket reset it)
        answer = b""
        with contextlib.suppress(OSError):
            while chunk := s.recv(65536):
                answer += chunk
    status, _headers, body = parse_response(answer)
    assert status == 431
    assert json.loads(body)["error"] == "headers_too_large"


def test_a_target_named_before_is_checked_against_each_requests_host(proxy, upstreams):
    """The naming of an absolute-form target is remembered with its Host: the target names the
    call whatever the Host says (RFC 9112 §3.2.2: a proxy ignores it, and the upstream gets the
    target's), but a malformed Host, or none on HTTP/1.1, is refused each time after the same
    target was served."""
    m = f"named-{uuid.uuid4().hex[:8]}"
    target = f"http://api.vendor.test:{upstreams.http_port}/{m}"
    authority = f"api.vendor.test:{upstreams.http_port}"

    def status_of(request: str) -> int:
        return parse_response(raw_exchange(proxy.port, request.encode()))[0]

    for _ in range(2):
        for host in (authority, f"API.Vendor.TEST:{upstreams.http_port}", "evil.example"):
            request = f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
            assert status_of(request) == 200
        assert (
            status_of(f"GET {target} HTTP/1.1\r\nHost: evil example\r\nConnection: close\r\n\r\n")
            == 400
        )
        assert status_of(f"GET {target} HTTP/1.1\r\nConnection: close\r\n\r\n") == 400
        assert status_of(f"GET {target} HTTP/1.0\r\n\r\n") == 200
    seen = upstreams.find(m)
    assert len(seen) == 8
    assert {x.header("Host") for x in seen} == {authority}
