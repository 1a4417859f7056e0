"""End-to-end: HTTP/1.1 as real clients speak it through the proxy (RFC 9110, RFC 9112).

Framings, interim answers, upgrades and trailers, on raw sockets where the exact bytes matter,
and the requests of curl, Node's `http` and Java's `HttpClient` as they send them.
"""

from __future__ import annotations

import http.client
import json
import re
import shutil
import socket
import struct
import subprocess
import time
import uuid
from pathlib import Path

import aiohttp
import pytest
import requests
from proxy_harness import PHONE, counting_bytes, parse_response, raw_exchange


def _marker(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def _post_head(port: int, path: str, extra: str, version: str = "1.1") -> bytes:
    return (
        f"POST http://api.vendor.test:{port}{path} HTTP/{version}\r\n"
        f"Host: api.vendor.test:{port}\r\n{extra}\r\n"
    ).encode()


# -- request framing -----------------------------------------------------------------------------


def test_trailer_fields_are_neither_merged_into_the_head_nor_forwarded(proxy, upstreams):
    # RFC 9110 §6.5.1: a trailer is never merged into the header section; a purpose declared
    # there (after the body) is no declaration, and nothing in it leaves the pod.
    m = _marker("trailers")
    head = _post_head(
        upstreams.http_port,
        f"/{m}",
        "Transfer-Encoding: chunked\r\nTrailer: X-Trail\r\nConnection: close\r\n",
    )
    body = (
        b"5;name=value\r\nhello\r\n6\r\n world\r\n0\r\n"
        b"X-Trail: t\r\nX-Sharewall-Purpose: marketing\r\n\r\n"
    )
    status, _, answer = parse_response(raw_exchange(proxy.port, head + body))
    assert status == 200, answer
    [seen] = upstreams.find(m)
    assert seen.body == b"hello world"
    assert seen.header("X-Trail") is None
    [line] = proxy.decisions_for(m)
    assert line["purpose"] == "service_delivery"  # the default: the trailer declared nothing


def test_a_transfer_coding_other_than_chunked_is_refused_and_never_forwarded(proxy, upstreams):
    # Transfer-Encoding is hop-by-hop: forwarded, the gzip bytes would reach the vendor as
    # the content itself (RFC 9112 §6.1: 501 for a coding the server does not handle).
    m = _marker("te-gzip")
    head = _post_head(upstreams.http_port, f"/{m}", "Transfer-Encoding: gzip, chunked\r\n")
    status, _, body = parse_response(raw_exchange(proxy.port, head + b"3\r\nabc\r\n0\r\n\r\n"))
    assert status == 501
    assert json.loads(body)["error"] == "unsupported"
    assert upstreams.find(m) == []


def test_an_http10_client_is_never_sent_100_continue(proxy, upstreams):
    # RFC 9110 §10.1.1: an HTTP/1.0 client does not wait for it and cannot read it.
    m = _marker("h10-expect")
    head = _post_head(
        upstreams.http_port, f"/{m}", "Content-Length: 5\r\nExpect: 100-continue\r\n", "1.0"
    )
    raw = raw_exchange(proxy.port, head + b"hello")
    assert raw.startswith(b"HTTP/1.0 200 "), raw[:80]
    [seen] = upstreams.find(m)
    assert seen.body == b"hello"


def _answers(port: int, data: bytes) -> list[tuple[bytes, dict[str, str]]]:
    """(status line, lower-cased headers) of each answer to pipelined requests, the last of
    which closes the connection."""
    raw = raw_exchange(port, data)
    answers = []
    while raw:
        _status, headers, rest = parse_response(raw)
        answers.append((raw.split(b"\r\n", 1)[0], headers))
        raw = rest[int(headers.get("content-length", "0")) :]
    return answers


@pytest.mark.parametrize(
    ("first", "answer"),
    [
        pytest.param("HTTP/1.1", b"HTTP/1.1 200 OK", id="1.1 without a Connection field"),
        pytest.param("HTTP/1.1\r\nConnection: keep-alive", b"HTTP/1.1 200 OK", id="1.1 keep-alive"),
        pytest.param("HTTP/1.0\r\nConnection: keep-alive", b"HTTP/1.0 200 OK", id="1.0 keep-alive"),
        pytest.param(
            "HTTP/1.0\r\nProxy-Connection: Keep-Alive",
            b"HTTP/1.0 200 OK",
            id="1.0 proxy keep-alive",
        ),
    ],
)
def test_a_kept_alive_request_is_answered_in_its_own_version(proxy, upstreams, first, answer):
    # llhttp keeps HTTP/1.1 alive by default and HTTP/1.0 when a Connection (or
    # Proxy-Connection) field asks: either way the version the app spoke is the one answered.
    m = _marker("version")
    authority = f"api.vendor.test:{upstreams.http_port}"
    request = (
        f"GET http://{authority}/{m}-1 {first}\r\nHost: {authority}\r\n\r\n"
        f"GET http://{authority}/{m}-2 HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    )
    answers = _answers(proxy.port, request.encode())
    assert [status for status, _ in answers] == [answer, b"HTTP/1.1 200 OK"]
    assert answers[0][1]["connection"] == "keep-alive"
    assert [seen.path for seen in upstreams.find(m)] == [f"/{m}-1", f"/{m}-2"]


def test_an_http10_request_without_a_connection_field_is_answered_and_closed(proxy, upstreams):
    m = _marker("h10")
    authority = f"api.vendor.test:{upstreams.http_port}"
    request = f"GET http://{authority}/{m} HTTP/1.0\r\nHost: {authority}\r\n\r\n"
    [(status, headers)] = _answers(proxy.port, request.encode())
    assert (status, headers["connection"]) == (b"HTTP/1.0 200 OK", "close")


def test_field_names_are_forwarded_as_spelled_and_read_in_any_case(proxy, upstreams):
    # Names are remembered by their bytes (a bounded table): each spelling is its own, the
    # purpose is found in any case, and names past the table's bound are read all the same.
    m = _marker("names")
    authority = f"api.vendor.test:{upstreams.http_port}"
    # 600 names past the table's bound (a refused call: the upstream takes 100 at most), then
    # 100 that go upstream.
    many = "".join(f"X-Many-{m}-{i}: {i}\r\n" for i in range(600))
    fillers = "".join(f"X-Filler-{m}-{i}: {i}\r\n" for i in range(100))
    fields = [
        "X-Sharewall-Purpose: marketing\r\n",  # (not approved for this vendor: refused)
        "x-sharewall-purpose: marketing\r\n" + many,
        fillers,
        "X-SHAREWALL-PURPOSE: marketing\r\n",
        f"X-Spelled-{m}: a\r\nx-spelled-{m}: b\r\n",
        "x-ShareWall-Purpose: marketing\r\nConnection: close\r\n",
    ]
    requests_ = "".join(
        f"GET http://{authority}/{m}-{n} HTTP/1.1\r\nHost: {authority}\r\n{extra}\r\n"
        for n, extra in enumerate(fields)
    )
    answers = _answers(proxy.port, requests_.encode())
    assert [status.split(b" ")[1] for status, _ in answers] == [
        b"403",
        b"403",
        b"200",
        b"403",
        b"200",
        b"403",
    ]
    lines = sorted(proxy.decisions_for(m, count=6), key=lambda line: line["path"])
    assert [line["purpose"] for line in lines] == [
        "marketing",
        "marketing",
        "service_delivery",
        "marketing",
        "service_delivery",
        "marketing",
    ]
    [fillers] = upstreams.find(f"/{m}-2")
    assert [(k, v) for k, v in fillers.headers if k.startswith("X-Filler-")] == [
        (f"X-Filler-{m}-{i}", str(i)) for i in range(100)
    ]
    [spelled] = upstreams.find(f"/{m}-4")
    assert [(k, v) for k, v in spelled.headers if k.lower() == f"x-spelled-{m}"] == [
        (f"X-Spelled-{m}", "a"),
        (f"x-spelled-{m}", "b"),
    ]


def test_expect_100_continue_is_answered_before_the_body_is_inspected(proxy, upstreams):
    # The proxy asks for the body itself (it must inspect it before anything goes upstream)
    # and the refusal comes once the body is read, on a connection that serves the next call.
    m = _marker("expect")
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as s:
        form = f"To={PHONE}".encode()
        s.sendall(
            _post_head(
                upstreams.http_port,
                f"/{m}",
                f"Content-Length: {len(form)}\r\nExpect: 100-continue\r\n"
                "Content-Type: application/x-www-form-urlencoded\r\n"
                "X-Sharewall-Purpose: marketing\r\n",
            )
        )
        assert s.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(
            form
            + f"GET http://api.vendor.test:{upstreams.http_port}/{m}-next HTTP/1.1\r\n"
            f"Host: api.vendor.test:{upstreams.http_port}\r\nConnection: close\r\n\r\n".encode()
        )
        raw = b""
        while chunk := s.recv(65536):
            raw += chunk
    status, headers, rest = parse_response(raw)
    assert (status, headers["connection"]) == (403, "keep-alive")
    refusal, after = rest[: int(headers["content-length"])], rest[int(headers["content-length"]) :]
    assert json.loads(refusal)["error"] == "egress_blocked"
    assert after.startswith(b"HTTP/1.1 200 OK")
    assert [seen.path for seen in upstreams.find(m)] == [f"/{m}-next"]


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_curl_upload_with_expect_100_continue(proxy, upstreams, tmp_path: Path):
    # curl -T sends `Expect: 100-continue` and waits for it (a second, else it sends anyway):
    # the proxy's own 100 brings the body, which is inspected like any other.
    m = _marker("curl-expect")
    upload = tmp_path / "upload.txt"
    upload.write_text(f"To={PHONE}\n")
    url = f"http://origin.vendor.test:{upstreams.https_port}/{m}"
    base = ["curl", "-s", "-x", proxy.url, "--noproxy", "", "-T", str(upload)]
    for purpose in ("service_delivery", "marketing"):
        done = subprocess.run(
            [*base, "-H", f"X-Sharewall-Purpose: {purpose}", "-w", "\n%{http_code}", url],
            capture_output=True,
            timeout=20,
            check=True,
        )
        body, _, status = done.stdout.decode().rpartition("\n")
        if purpose == "service_delivery":
            assert status == "200" and json.loads(body)["method"] == "PUT"
        else:
            assert status == "403" and json.loads(body)["error"] == "egress_blocked"
    [seen] = upstreams.find(m)
    assert seen.body == f"To={PHONE}\n".encode()
    assert seen.header("Expect") is None


async def test_aiohttp_expect100_through_the_proxy(proxy, upstreams):
    m = _marker("aiohttp-expect")
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"http://api.vendor.test:{upstreams.http_port}/{m}",
            data=b"x" * 2000,
            proxy=proxy.url,
            expect100=True,
        ) as r,
    ):
        assert r.status == 200
        assert (await r.json())["body_len"] == 2000


# -- upgrades ------------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
@pytest.mark.parametrize("scheme", ["http", "https"])
def test_curl_downloads_a_large_answer_whole(proxy, upstreams, certs, tmp_path: Path, scheme):
    # 24 MiB streamed back (plain, and re-encrypted inside an intercepted tunnel) faster than
    # it is written out: every byte in order, none lost while the app's side is full.
    m = _marker(f"large-{scheme}")
    size = 24 << 20
    port = upstreams.http_port if scheme == "http" else upstreams.https_port
    out = tmp_path / "answer"
    subprocess.run(
        [
            "curl",
            "-sS",
            "--fail",
            "-x",
            proxy.url,
            "--noproxy",
            "",
            "--cacert",
            str(certs.proxy_ca_cert),
            "-o",
            str(out),
            f"{scheme}://api.vendor.test:{port}/bytes/{size}/{m}",
        ],
        check=True,
        timeout=60,
    )
    assert out.read_bytes() == counting_bytes(size)
    [line] = proxy.decisions_for(m)
    assert (line["action"], line["status"]) == ("allow", 200)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_curl_http2_on_plain_http_is_served_as_http11(proxy, upstreams):
    # `curl --http2` asks for h2c on a plain-HTTP call (Upgrade, HTTP2-Settings); a server may
    # answer as if it had not (RFC 9110 §7.8), and neither field is forwarded.
    # httptools hands what follows an Upgrade head over as another protocol's: a POST's body
    # is read by its Content-Length all the same, inspected and forwarded.
    m = _marker("h2c")
    base = ["curl", "-s", "--http2", "-x", proxy.url, "--noproxy", "", "-w", "\n%{http_version}"]
    url = f"http://api.vendor.test:{upstreams.http_port}/{m}"
    for extra in ([], ["-d", "ref=h2c-1"]):
        done = subprocess.run([*base, *extra, url], capture_output=True, timeout=20, check=True)
        body, _, version = done.stdout.decode().rpartition("\n")
        assert version == "1.1"
        assert json.loads(body)["path"] == f"/{m}"
    got, posted = upstreams.find(m)
    assert (got.method, got.body, posted.method, posted.body) == ("GET", b"", "POST", b"ref=h2c-1")
    for seen in (got, posted):
        assert seen.header("Upgrade") is None and seen.header("HTTP2-Settings") is None
    blocked = subprocess.run(
        [*base, "-H", "X-Sharewall-Purpose: marketing", "-d", f"To={PHONE}", url + "-b"],
        capture_output=True,
        timeout=20,
        check=True,
    )
    body, _, _ = blocked.stdout.decode().rpartition("\n")
    assert "MOBILE_INFO_FOR_MARKETING" in [r["code"] for r in json.loads(body)["reasons"]]


def test_an_h2c_upgrade_body_that_comes_after_its_head_is_read_whole(proxy, upstreams):
    m = _marker("h2c-split")
    head = _post_head(
        upstreams.http_port,
        f"/{m}",
        "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
        "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nContent-Length: 10\r\n",
    )
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as s:
        s.sendall(head + b"ref=")
        time.sleep(0.2)  # (the rest in a segment of its own)
        s.sendall(b"h2c-2!")
        raw = b""
        while chunk := s.recv(65536):
            raw += chunk
    status, headers, _ = parse_response(raw)
    assert (status, headers["connection"]) == (200, "close")  # nothing is read after it
    [seen] = upstreams.find(m)
    assert seen.body == b"ref=h2c-2!"


def test_a_websocket_upgrade_is_refused_and_never_forwarded(proxy, upstreams):
    # WebSocket frames are nothing the inspection reads: the call is refused, not relayed.
    m = _marker("websocket")
    request = (
        f"GET http://api.vendor.test:{upstreams.http_port}/{m} HTTP/1.1\r\n"
        f"Host: api.vendor.test:{upstreams.http_port}\r\nConnection: Upgrade\r\n"
        "Upgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    status, _, body = parse_response(raw_exchange(proxy.port, request))
    assert status == 400
    assert json.loads(body)["error"] == "bad_request"
    assert upstreams.find(m) == []


# -- responses -----------------------------------------------------------------------------------


def _get_on(conn: http.client.HTTPConnection, url: str) -> tuple[int, dict[str, str], bytes]:
    conn.request("GET", url)
    r = conn.getresponse()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()


@pytest.mark.parametrize(
    ("path", "status", "length"),
    [
        # RFC 9110 §8.6: never on a 204, though the upstream sent one.
        pytest.param("/no-content", 204, None, id="204 with a Content-Length"),
        # On a 304 it is the representation's size (RFC 9110 §8.6): kept, and no body follows.
        pytest.param("/not-modified", 304, "5", id="304 with a Content-Length"),
    ],
)
def test_204_and_304_carry_no_body_and_the_connection_serves_on(
    proxy, upstreams, path, status, length
):
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    try:
        got, headers, body = _get_on(conn, f"http://api.vendor.test:{upstreams.raw_port}{path}")
        assert (got, body, headers.get("content-length")) == (status, b"", length)
        sock = conn.sock
        assert _get_on(conn, f"http://api.vendor.test:{upstreams.raw_port}/ok")[0] == 200
        assert conn.sock is sock
    finally:
        conn.close()


def test_a_status_line_without_a_reason_keeps_its_space(proxy, upstreams):
    # status-line = HTTP-version SP status-code SP [ reason-phrase ] (RFC 9112 §4).
    raw = raw_exchange(
        proxy.port,
        f"GET http://api.vendor.test:{upstreams.raw_port}/no-reason HTTP/1.1\r\n"
        f"Host: api.vendor.test:{upstreams.raw_port}\r\nConnection: close\r\n\r\n".encode(),
    )
    assert raw.startswith(b"HTTP/1.1 200 \r\n") and raw.endswith(b"\r\n\r\nok")


def test_each_answer_keeps_its_own_status_line(proxy, upstreams):
    # The relayed status lines are kept by client version, status and reason: the same status
    # with another reason, or to an HTTP/1.0 client, is a line of its own.
    target = f"http://api.vendor.test:{upstreams.raw_port}"
    host = f"Host: api.vendor.test:{upstreams.raw_port}\r\n"
    paths = ["200/OK", "200/All%20fine", "200/OK", "201/Created", "200/OK", "404/Not%20Found"]
    pipelined = "".join(f"GET {target}/reason/{p} HTTP/1.1\r\n{host}\r\n" for p in paths)
    last = f"GET {target}/no-reason HTTP/1.1\r\n{host}Connection: close\r\n\r\n"
    raw = raw_exchange(proxy.port, (pipelined + last).encode())
    assert re.findall(rb"HTTP/1\.[01] [^\r\n]*\r\n", raw) == [
        b"HTTP/1.1 200 OK\r\n",
        b"HTTP/1.1 200 All fine\r\n",
        b"HTTP/1.1 200 OK\r\n",
        b"HTTP/1.1 201 Created\r\n",
        b"HTTP/1.1 200 OK\r\n",
        b"HTTP/1.1 404 Not Found\r\n",
        b"HTTP/1.1 200 \r\n",
    ]
    raw = raw_exchange(proxy.port, f"GET {target}/reason/200/OK HTTP/1.0\r\n{host}\r\n".encode())
    assert raw.startswith(b"HTTP/1.0 200 OK\r\n") and raw.endswith(b"\r\n\r\nok")


def test_early_hints_are_not_relayed_and_the_final_answer_is(proxy, upstreams):
    # http.client (requests, urllib3) takes any 1xx but 100 for the final answer.
    r = requests.get(
        f"http://api.vendor.test:{upstreams.raw_port}/early-hints",
        proxies={"http": proxy.url},
        timeout=10,
    )
    assert (r.status_code, r.content) == (200, b"final")
    assert "Link" not in r.headers  # the hint's own field goes with it


def test_a_101_nobody_asked_for_is_a_502(proxy, upstreams):
    # No Upgrade is ever sent upstream: relayed, the 101 would leave the app on a connection
    # switched to nothing.
    status, _, body = parse_response(
        raw_exchange(
            proxy.port,
            f"GET http://api.vendor.test:{upstreams.raw_port}/switch HTTP/1.1\r\n"
            f"Host: api.vendor.test:{upstreams.raw_port}\r\n\r\n".encode(),
        )
    )
    assert status == 502
    assert json.loads(body)["error"] == "upstream_unreachable"


def test_an_app_gone_mid_answer_is_neither_a_fault_nor_the_upstreams(proxy, upstreams):
    # The app resets its connection while the upstream pauses in its body; the rest then
    # comes and has nowhere to go. The call went out allowed, and its line says so (uvloop's
    # transports raise on a write after the reset: that was a 503 internal_error line).
    m = _marker("gone")
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as s:
        s.sendall(
            f"GET http://api.vendor.test:{upstreams.raw_port}/stall/{m} HTTP/1.1\r\n"
            f"Host: api.vendor.test:{upstreams.raw_port}\r\n\r\n".encode()
        )
        assert s.recv(65536).startswith(b"HTTP/1.1 200 OK")
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    # Closed with SO_LINGER 0: a reset.
    [line] = proxy.decisions_for(m)
    assert (line["action"], line["status"], line.get("fault")) == ("allow", 200, None)
    [cut] = proxy.lines_where(lambda line: line.get("event") == "client.response_cut")
    assert cut["status"] == 200
    events = {line.get("event") for line in proxy.logs()}
    assert "upstream.response_cut" not in events and "egress.internal_error" not in events


def _read_to_the_end(sock: socket.socket) -> bytes:
    raw = b""
    while chunk := sock.recv(65536):
        raw += chunk
    return raw


def test_an_app_that_half_closes_after_its_request_gets_the_whole_answer(proxy, upstreams):
    # Scripts (`nc -N`, HTTP/1.0 tools) shut their side down once the request is sent: the
    # request is still decided and forwarded, and its answer still comes before the close.
    m = _marker("half-close")
    body = b"ref=half-close&batch=42"
    form = "Content-Type: application/x-www-form-urlencoded\r\n"
    head = _post_head(upstreams.http_port, f"/{m}", f"{form}Content-Length: {len(body)}\r\n")
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as s:
        s.sendall(head + body)
        s.shutdown(socket.SHUT_WR)
        status, _, answer = parse_response(_read_to_the_end(s))
    assert status == 200 and json.loads(answer)["body_len"] == len(body)
    [line] = proxy.decisions_for(m)
    assert (line["action"], line["status"]) == ("allow", 200)


# -- real clients --------------------------------------------------------------------------------

_NODE_PROXY_AS_HOST = """
// The plainest way through a proxy with Node's http: the absolute URL as the path, and no Host
// of the app's (Node then sends the proxy's own address as Host).
const http = require("http");
const [proxyPort, url] = process.argv.slice(1);
http.request({host: "127.0.0.1", port: Number(proxyPort), path: url}, (res) => {
  let data = "";
  res.on("data", (c) => (data += c));
  res.on("end", () => console.log(JSON.stringify({status: res.statusCode, body: data})));
}).end();
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="node not installed")
def test_node_http_absolute_form_with_the_proxy_as_host_names_the_target(proxy, upstreams):
    # RFC 9112 §3.2.2: a proxy ignores the Host of an absolute-form request and sends the
    # target's; it was refused 400 (Host disagrees), where Squid, Envoy or tinyproxy serve it.
    m = _marker("node-proxy-host")
    url = f"http://api.vendor.test:{upstreams.http_port}/{m}"
    out = subprocess.run(
        ["node", "-e", _NODE_PROXY_AS_HOST, str(proxy.port), url],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    answer = json.loads(out.stdout)
    assert answer["status"] == 200, answer["body"]
    [seen] = upstreams.find(m)
    assert seen.header("Host") == f"api.vendor.test:{upstreams.http_port}"
    [line] = proxy.decisions_for(m)
    assert (line["host"], line["action"]) == ("api.vendor.test", "allow")


_NODE_POSTS = """
// POSTs one after another on one kept-alive connection (a keep-alive agent with one socket),
// each body without a Content-Length: Node sends it chunked.
const http = require("http");
const [proxyPort, url, body, ...purposes] = process.argv.slice(1);
const target = new URL(url);
const agent = new http.Agent({keepAlive: true, maxSockets: 1});
const results = [];
function post(i) {
  if (i === purposes.length) {
    console.log(JSON.stringify(results));
    agent.destroy();
    return;
  }
  const req = http.request(
    {host: "127.0.0.1", port: Number(proxyPort), method: "POST", path: `${url}/${i}`, agent,
     headers: {Host: target.host, "Content-Type": "application/x-www-form-urlencoded",
               "X-Sharewall-Purpose": purposes[i]}},
    (res) => {
      let data = "";
      res.on("data", (c) => (data += c));
      res.on("end", () => {
        results.push({status: res.statusCode, body: data, port: req.socket.localPort});
        post(i + 1);
      });
    });
  req.write(body);
  req.end();
}
post(0);
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="node not installed")
def test_node_http_chunked_posts_on_one_kept_alive_connection(proxy, upstreams):
    # Blocked, then allowed, then blocked again, on the same connection: a refusal (its body
    # read whole) leaves the connection serving the next call.
    m = _marker("node")
    # TLS origination: personal data may go there for service delivery, not for marketing.
    url = f"http://origin.vendor.test:{upstreams.https_port}/{m}"
    purposes = ["marketing", "service_delivery", "marketing"]
    done = subprocess.run(
        ["node", "-e", _NODE_POSTS, str(proxy.port), url, f"To={PHONE}", *purposes],
        capture_output=True,
        timeout=30,
        check=True,
    )
    answers = json.loads(done.stdout)
    assert [a["status"] for a in answers] == [403, 200, 403]
    assert len({a["port"] for a in answers}) == 1  # one client connection all along
    codes = [r["code"] for r in json.loads(answers[0]["body"])["reasons"]]
    assert "MOBILE_INFO_FOR_MARKETING" in codes
    [seen] = upstreams.find(m)
    assert (seen.path, seen.body) == (f"/{m}/1", f"To={PHONE}".encode())


_JAVA_POST = """
import java.net.InetSocketAddress;
import java.net.ProxySelector;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;

public class Post {
    public static void main(String[] args) throws Exception {
        HttpClient client = HttpClient.newBuilder()
            .proxy(ProxySelector.of(new InetSocketAddress("127.0.0.1", Integer.parseInt(args[0]))))
            .build();
        HttpRequest request = HttpRequest.newBuilder(URI.create(args[1]))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .header("X-Sharewall-Purpose", args[2])
            .POST(HttpRequest.BodyPublishers.ofString(args[3]))
            .build();
        for (int i = 0; i < 2; i++) {  // the second on the kept-alive connection
            HttpResponse<String> r = client.send(request, HttpResponse.BodyHandlers.ofString());
            System.out.println(r.statusCode());
        }
    }
}
"""


@pytest.mark.skipif(shutil.which("java") is None, reason="java not installed")
@pytest.mark.parametrize(
    ("purpose", "status"),
    [
        pytest.param("service_delivery", "200", id="allowed"),
        pytest.param("marketing", "403", id="blocked"),
    ],
)
def test_java_httpclient_post(proxy, upstreams, tmp_path: Path, purpose, status):
    # java.net.http.HttpClient defaults to HTTP/2; through a proxy, plain HTTP goes as 1.1.
    m = _marker("java")
    source = tmp_path / "Post.java"
    source.write_text(_JAVA_POST)
    # TLS origination: personal data may go there for service delivery, not for marketing.
    url = f"http://origin.vendor.test:{upstreams.https_port}/{m}"
    done = subprocess.run(
        ["java", str(source), str(proxy.port), url, purpose, f"To={PHONE}"],
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert done.stdout.decode().split() == [status, status]
    assert len(upstreams.find(m)) == (2 if status == "200" else 0)
