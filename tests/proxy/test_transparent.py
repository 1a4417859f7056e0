"""Transparent capture end to end, in network namespaces the test creates (see netns_harness).

An app in the "pod" that knows nothing about sharewall (no proxy variables, its own UID)
connects straight to an "internet" server's address; the kernel redirects the connection to
`sharewall proxy --transparent-listen`, and the call is still named, decided and logged.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from netns_harness import (
    OTHER_ADDR,
    PROXY_UID,
    SERVER_ADDR,
    SOURCE,
    TRANSPARENT_PORT,
    Pod,
    missing_requirement,
    transparent_pod,
)
from proxy_harness import wait_for_lines

pytestmark = pytest.mark.skipif(
    missing_requirement() is not None, reason=str(missing_requirement())
)

PHONE = "+6591234567"


@pytest.fixture(scope="module")
def pod() -> Iterator[Pod]:
    with transparent_pod() as running:
        yield running


def test_capture_rules_were_applied_and_timed(pod: Pod) -> None:
    line = pod.capture_line  # type: ignore[attr-defined]
    assert line["event"] == "capture.applied" and line["apply_ms"] > 0


def test_approved_plain_http_call_passes_with_its_body_intact(pod: Pod) -> None:
    body = "ref=tp-http-1&batch=42"
    answer = pod.http(SERVER_ADDR, "api.vendor.test", path="/tp-http-1", body=body)
    assert answer["status"] == 200
    [seen] = pod.seen("/tp-http-1")
    assert seen["body"] == body and seen["scheme"] == "http"
    assert "x-sharewall-purpose" not in seen["headers"]
    line = pod.decision_where(path="/tp-http-1")
    assert line["action"] == "allow" and line["host"] == "api.vendor.test"
    assert line["recipient_id"] == "vendor" and line["inspected"] is True


def test_java_httpclients_h2c_upgrade_is_served_as_http11(pod: Pod) -> None:
    # java.net.http.HttpClient (HTTP/2 by default) asks every direct plain-HTTP call to upgrade
    # to h2c, in these bytes (Java 17; "close" added so the raw app reads to the end). Captured,
    # the call is served as HTTP/1.1; it was refused 400 as a protocol upgrade.
    send = (
        "POST /tp-h2c HTTP/1.1\r\nConnection: Upgrade, HTTP2-Settings, close\r\n"
        "Content-Length: 3\r\nHost: api.vendor.test\r\n"
        "HTTP2-Settings: AAEAAEAAAAIAAAAAAAMAAAAAAAQBAAAAAAUAAEAAAAYABgAA\r\nUpgrade: h2c\r\n"
        "User-Agent: Java-http-client/17.0.15\r\n\r\na=b"
    )
    answer = pod.app("raw", SERVER_ADDR, "80", "--send", send)
    assert answer["received"].startswith("HTTP/1.1 200 ")
    [seen] = pod.seen("/tp-h2c")
    assert seen["body"] == "a=b"
    assert "upgrade" not in seen["headers"] and "http2-settings" not in seen["headers"]


def test_approved_https_call_is_spliced_with_the_client_hello_replayed(pod: Pod) -> None:
    answer = pod.https(SERVER_ADDR, "tunnel.vendor.test", path="/tp-splice-1", body="ref=1")
    # The app completed TLS with the server's own certificate: sharewall only relayed bytes.
    assert answer["status"] == 200 and answer["issuer"] != "sharewall"
    [seen] = pod.seen("/tp-splice-1")
    assert seen["body"] == "ref=1" and seen["scheme"] == "https"
    line = pod.decision_where(host="tunnel.vendor.test", method="CONNECT")
    assert line["action"] == "allow" and line["inspected"] is False and line["status"] == 200
    assert line["tunnel"] is True


def test_https_to_an_inspect_tls_recipient_is_intercepted_and_inspected(pod: Pod) -> None:
    body = f"To={PHONE}&Body=Your%20code%20is%201234"
    answer = pod.https(SERVER_ADDR, "api.vendor.test", path="/tp-intercept-1", body=body)
    assert answer["status"] == 200 and answer["issuer"] == "sharewall"  # a minted leaf
    [seen] = pod.seen("/tp-intercept-1")
    assert seen["body"] == body
    line = pod.decision_where(path="/tp-intercept-1")
    assert line["action"] == "allow" and line["inspected"] is True
    assert "contact.phone_number" in line["categories"]
    assert PHONE not in pod.proxy_log.read_text()  # never a value in a log line


def test_blocked_plain_call_never_reaches_the_server(pod: Pod) -> None:
    body = f"To={PHONE}&Body=Big%20sale"
    answer = pod.http(
        SERVER_ADDR, "api.vendor.test", path="/tp-block-1", body=body, purpose="marketing"
    )
    assert answer["status"] == 403
    assert '"egress_blocked"' in answer["body"]
    assert pod.seen("/tp-block-1") == []
    line = pod.decision_where(path="/tp-block-1")
    assert line["action"] == "deny" and "MOBILE_INFO_FOR_MARKETING" in line["reason_codes"]


def test_blocked_tls_connection_is_closed_and_recorded(pod: Pod) -> None:
    # An uninspected tunnel to an affiliate: the policy denies it; a TLS client cannot read a
    # 403, so the connection is closed, and the decision line still records it.
    answer = pod.https(SERVER_ADDR, "partner.affiliate.test", path="/tp-block-2")
    assert answer.get("closed") is True and answer.get("status") is None
    assert pod.seen("/tp-block-2") == []
    line = pod.decision_where(host="partner.affiliate.test")
    assert line["action"] == "deny" and line["reason_codes"] == ["UNINSPECTED_HIGH_RISK"]
    assert line["status"] is None  # what the app got: no HTTP answer, a closed connection


def test_captured_tls_that_does_not_trust_the_proxy_ca_is_recorded(pod: Pod) -> None:
    # An inspect_tls recipient is intercepted; an app that does not trust the interception CA
    # gives up in the handshake. Its call never happened, and the line says why.
    internet_ca_only = str(pod.workdir / "certs" / "internet-ca.pem")
    answer = pod.app("https", SERVER_ADDR, "443", "api.vendor.test", "--cafile", internet_ca_only)
    assert answer.get("closed") is True and answer.get("tls_error")
    line = pod.decision_where(host="api.vendor.test", fault="tls_handshake_failed")
    assert line["action"] == "deny" and line["method"] == "CONNECT" and line["status"] is None


def test_host_not_leading_to_the_connected_address_is_a_mismatch(pod: Pod) -> None:
    # The app claims an approved name while connecting to another server.
    answer = pod.http(OTHER_ADDR, "api.vendor.test", path="/tp-mismatch-1", body="a=1")
    assert answer["status"] == 403 and "DESTINATION_MISMATCH" in answer["body"]
    assert pod.seen("/tp-mismatch-1") == []
    line = pod.decision_where(path="/tp-mismatch-1")
    assert line["reason_codes"] == ["DESTINATION_MISMATCH"]


@pytest.mark.parametrize(
    "name", ["tunnel.vendor.test", "api.vendor.test"], ids=["spliced", "intercept candidate"]
)
def test_sni_not_leading_to_the_connected_address_is_a_mismatch(pod: Pod, name: str) -> None:
    answer = pod.https(OTHER_ADDR, name, path=f"/tp-mismatch-{name}")
    assert answer.get("closed") is True
    assert pod.seen(f"/tp-mismatch-{name}") == []
    line = pod.decision_where(host=name, reason_codes=["DESTINATION_MISMATCH"])
    assert line["action"] == "deny"


def test_host_naming_another_port_is_a_mismatch(pod: Pod) -> None:
    answer = pod.http(SERVER_ADDR, "api.vendor.test:8080", path="/tp-mismatch-port")
    assert answer["status"] == 403 and "DESTINATION_MISMATCH" in answer["body"]
    assert pod.seen("/tp-mismatch-port") == []


@pytest.mark.parametrize(
    ("port", "send", "why"),
    [
        pytest.param("22", "SSH-2.0-OpenSSH_9.2p1\r\n", "not_http", id="SSH-like: client speaks"),
        pytest.param("25", "", "timeout", id="SMTP-like: client waits for a banner"),
    ],
)
def test_other_tcp_is_unidentified(pod: Pod, port: str, send: str, why: str) -> None:
    args = ["raw", SERVER_ADDR, port] + (["--send", send] if send else [])
    answer = pod.app(*args)
    assert answer["received"] == ""  # the server's banner never arrives: it was never reached
    line = pod.decision_where(port=int(port), reason_codes=["DESTINATION_UNIDENTIFIED"])
    assert line["action"] == "deny" and line["host"] == SERVER_ADDR
    assert any(
        r.get("event") == "egress.destination_denied" and r.get("detail") == why for r in pod.logs()
    )


def test_http_request_without_a_host_is_unidentified(pod: Pod) -> None:
    answer = pod.app("raw", SERVER_ADDR, "80", "--send", "GET /tp-nohost HTTP/1.0\r\n\r\n")
    assert answer["received"].startswith("HTTP/1.0 403")
    assert "DESTINATION_UNIDENTIFIED" in answer["received"]
    assert pod.seen("/tp-nohost") == []


def test_the_proxys_own_connections_are_not_redirected(pod: Pod) -> None:
    # Under the proxy's UID a direct connection goes out untouched (no decision line): this is
    # what keeps the proxy's upstream connections from looping back into it.
    before = len(pod.decisions())
    answer = pod.http(SERVER_ADDR, "unregistered.test", path="/tp-own-uid", uid=PROXY_UID)
    assert answer["status"] == 200
    assert len(pod.seen("/tp-own-uid")) == 1
    assert not [d for d in pod.decisions()[before:] if d.get("path") == "/tp-own-uid"]


def test_a_connection_aimed_at_the_transparent_port_itself_is_refused(pod: Pod) -> None:
    answer = pod.app("raw", "127.0.0.1", str(TRANSPARENT_PORT), "--send", "GET / HTTP/1.1\r\n")
    assert answer["received"] == ""
    assert wait_for_lines(
        pod.logs,
        lambda r: r.get("event") == "transparent.refused" and r.get("reason") == "proxy_self",
    )


def test_udp_other_than_dns_is_dropped(pod: Pod) -> None:
    assert pod.app("udp", SERVER_ADDR, "53")["reply"] == "echo:ping"
    assert pod.app("udp", SERVER_ADDR, "9999")["reply"] is None


def test_decision_lines_name_the_source(pod: Pod) -> None:
    pod.http(SERVER_ADDR, "api.vendor.test", path="/tp-source-1")
    line = pod.decision_where(path="/tp-source-1")
    assert (line["source_workload"], line["source_namespace"]) == SOURCE
