"""The proxy process: runs on the event loop it is told to."""

from __future__ import annotations

import uuid

import pytest
import requests
from proxy_harness import PHONE, start_proxy


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
        listening = next(e for e in proxy.logs() if e.get("event") == "proxy.listening")
        assert listening["event_loop"] == loop
    finally:
        proxy.stop()
