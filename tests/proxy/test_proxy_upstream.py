"""End-to-end: the upstream client's framings, connection reuse and malformed upstreams."""

from __future__ import annotations

import http.client
import uuid

import pytest
import requests


def _session(proxy) -> requests.Session:
    s = requests.Session()
    s.trust_env = False
    s.proxies = {"http": proxy.url}
    return s


def test_close_delimited_upstream_body_is_rechunked_for_http11_clients(proxy, upstreams):
    m = uuid.uuid4().hex[:8]
    r = _session(proxy).get(
        f"http://api.vendor.test:{upstreams.raw_port}/close-delimited/{m}", timeout=10
    )
    assert r.status_code == 200
    assert r.headers["Transfer-Encoding"] == "chunked"
    assert r.content == b"x" * 5000


def test_chunked_upstream_body_with_extensions_and_trailers_is_decoded(proxy, upstreams):
    r = _session(proxy).get(f"http://api.vendor.test:{upstreams.raw_port}/trailers", timeout=10)
    assert r.status_code == 200
    assert r.content == b"hello world"
    assert "Trailer" not in r.headers  # hop-by-hop


def test_a_pooled_connection_dropped_by_the_upstream_is_retried_once(proxy, upstreams):
    m = uuid.uuid4().hex[:8]
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    try:
        for i in range(3):
            conn.request("GET", f"http://api.vendor.test:{upstreams.raw_port}/drop-second/{m}/{i}")
            r = conn.getresponse()
            assert (r.status, r.read()) == (200, b"ok")
    finally:
        conn.close()
    # Every later request reused a pooled connection, was dropped, and was retried once.
    for i in (1, 2):
        assert len(upstreams.find(f"/drop-second/{m}/{i}")) == 2


@pytest.mark.parametrize(
    ("headers", "sent", "status"),
    [
        pytest.param({}, 1, 502, id="POST: never sent twice"),
        pytest.param({"Idempotency-Key": "k-1"}, 2, 200, id="POST with an Idempotency-Key"),
    ],
)
def test_a_post_on_a_dropped_pooled_connection_is_retried_only_if_idempotent(
    proxy, upstreams, headers, sent, status
):
    # The upstream may have acted on the request before closing (RFC 9110 §9.2.2): an SMS or
    # a payment sent twice is the app's call to make, not the proxy's.
    m = uuid.uuid4().hex[:8]
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    try:
        statuses = []
        for i in range(2):
            conn.request(
                "POST",
                f"http://api.vendor.test:{upstreams.raw_port}/drop-second/{m}/{i}",
                body=b"page=2",
                headers={"Content-Type": "application/x-www-form-urlencoded", **headers},
            )
            r = conn.getresponse()
            r.read()
            statuses.append(r.status)
            if r.will_close:
                conn.close()
    finally:
        conn.close()
    assert statuses == [200, status]
    seen = upstreams.find(f"/drop-second/{m}/1")
    assert [(s.method, s.body) for s in seen] == [("POST", b"page=2")] * sent


def test_an_upstream_that_is_not_http_is_a_502(proxy, upstreams):
    r = _session(proxy).get(f"http://api.vendor.test:{upstreams.raw_port}/garbage", timeout=10)
    assert r.status_code == 502
    assert r.json()["error"] == "upstream_unreachable"


def test_an_upstream_body_cut_short_never_looks_complete_to_the_app(proxy, upstreams):
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    try:
        conn.request("GET", f"http://api.vendor.test:{upstreams.raw_port}/short-body")
        r = conn.getresponse()
        if r.status == 200:  # the head had gone out: the body must come up short
            with pytest.raises(http.client.IncompleteRead):
                r.read()
        else:
            assert r.status == 502
    finally:
        conn.close()


def test_upstream_tls_that_fails_is_a_502_not_a_plaintext_fallback(proxy, upstreams):
    # origin.vendor.test has tls_origination; its http_port speaks plain HTTP only.
    m = uuid.uuid4().hex[:8]
    r = _session(proxy).get(f"http://origin.vendor.test:{upstreams.http_port}/{m}", timeout=10)
    assert r.status_code == 502
    assert r.json()["error"] == "upstream_unreachable"
    assert upstreams.find(m) == []
