"""The proxy process: runs on the event loop it is told to, warmed up before it says it is ready."""

from __future__ import annotations

import http.client
import uuid

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
        listening = next(e for e in proxy.logs() if e.get("event") == "proxy.listening")
        assert listening["event_loop"] == loop
        # Which inspection path serves (native C loops or pure Python), as this venv built it.
        assert listening["inspection"] == native.status()
    finally:
        proxy.stop()


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
