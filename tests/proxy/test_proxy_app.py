"""The proxy process: runs on the event loop it is told to, warmed up before it says it is ready."""

from __future__ import annotations

import http.client
import socket
import ssl
import uuid
from pathlib import Path

import pytest
import requests
from proxy_harness import PHONE, start_proxy

from proxy.inspect import native


@pytest.mark.parametrize("loop", [pytest.param("asyncio"), pytest.param("uvloop")])
def test_proxy_runs_and_intercepts_tls_on_the_chosen_loop(tmp_path, certs, upstreams, loop):
    proxy = start_proxy(tmp_path, certs, upstreams, "--loop", loop)
    try:
        marker = f"loop-{uuid.uuid4().hex[:8]}"
        s = requests.Session()
        s.trust_env = False
        s.proxies = {"http": proxy.url, "https": proxy.url}
        s.verify = str(certs.proxy_ca_cert)
        # Intercepted: the proxy's start_tls towards the app and its TLS client upstream.
        url = f"https://api.vendor.test:{upstreams.https_port}/{marker}"
        assert s.post(url, data={"To": PHONE}, timeout=10).status_code == 200
        assert s.post(url, data={"To": PHONE}, timeout=10).status_code == 200
        lines = proxy.decisions_for(marker, count=2)
        assert [line["categories"] for line in lines] == [["contact.phone_number"]] * 2
        # Plain HTTP inside a CONNECT: told from TLS by a peek that waits on the loop.
        conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
        conn.set_tunnel(f"api.vendor.test:{upstreams.http_port}")
        try:
            conn.request("GET", f"/{marker}-plain")
            assert conn.getresponse().status == 200
        finally:
            conn.close()
        # A request sent with the client's last handshake message, in one segment (as a TLS
        # 1.3 client may): asyncio's loop hands it over before start_tls returns.
        target = f"api.vendor.test:{upstreams.https_port}"
        request = f"GET /{marker}-early HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n"
        answer = _request_with_the_handshakes_end(proxy.port, certs.proxy_ca_cert, target, request)
        assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
        listening = next(e for e in proxy.logs() if e.get("event") == "proxy.listening")
        assert listening["event_loop"] == loop
        # Which inspection path serves (native C loops or pure Python), as this venv built it.
        assert listening["inspection"] == native.status()
    finally:
        proxy.stop()


def _request_with_the_handshakes_end(port: int, ca: Path, target: str, request: str) -> bytes:
    """`request` inside an intercepted CONNECT to `target`, written in the same segment as the
    client's Finished (TLS over memory BIOs); the answer, read to the end."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
        assert sock.recv(4096).startswith(b"HTTP/1.1 200 ")
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        context = ssl.create_default_context(cafile=str(ca))
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        tls = context.wrap_bio(incoming, outgoing, server_hostname=target.split(":")[0])
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                sock.sendall(outgoing.read())
                incoming.write(sock.recv(65536))
        tls.write(request.encode())  # after the Finished still waiting in `outgoing`
        sock.sendall(outgoing.read())
        answer = b""
        while True:
            try:
                chunk = tls.read(65536)
            except ssl.SSLWantReadError:
                data = sock.recv(65536)
                if not data:
                    return answer
                incoming.write(data)
                continue
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return answer
            if not chunk:
                return answer
            answer += chunk


def test_warm_up_runs_before_readiness_and_decides_nothing(tmp_path, certs, upstreams):
    proxy = start_proxy(tmp_path, certs, upstreams)
    try:
        assert requests.get(f"{proxy.admin_url}/readyz", timeout=5).status_code == 200
        # Ready may answer before the writer thread has written the start-up lines.
        proxy.lines_where(lambda e: e.get("event") == "proxy.listening")
        events = [e.get("event") for e in proxy.logs()]
        assert "proxy.warm_up_failed" not in events
        # Warmed before the listener serves and before the admin port (and /readyz) exists.
        assert events.index("proxy.warmed_up") < events.index("proxy.listening")
        # The throwaway call is not a decision: no line, no spooled block.
        assert "egress.decision" not in events
    finally:
        proxy.stop()
