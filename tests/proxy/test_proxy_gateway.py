"""An egress gateway (`--client-ca`): each client's source is its TLS certificate's workload.

The real proxy process listens with TLS and requires client certificates from a test CA; the
registry binds purposes to workloads, so the certificate decides allow or deny. Clients without
a valid certificate never get a request through (the upstream never sees their marker).
"""

from __future__ import annotations

import socket
import ssl
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from client_certs import Issued, TestCA
from proxy_harness import (
    REGISTRY_YAML,
    Certs,
    ProxyProcess,
    Upstreams,
    parse_response,
    start_proxy,
)

WORKLOADS = [
    {
        "namespace": "messaging",
        "name": "sms-gateway",
        "status": "approved",
        "purposes": ["service_delivery"],
    },
    {
        "namespace": "marketing",
        "name": "campaign-runner",
        "status": "approved",
        "purposes": ["marketing"],
    },
]


@dataclass(frozen=True)
class Gateway:
    proxy: ProxyProcess
    server_ca: Path  # what clients trust for the gateway's own certificate
    clients: dict[str, Issued]


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, certs: Certs, upstreams: Upstreams
) -> Iterator[Gateway]:
    d = tmp_path_factory.mktemp("gateway")
    server_ca, client_ca, rogue_ca = TestCA("gateway CA"), TestCA("clients CA"), TestCA("rogue")
    server = server_ca.issue(d, "gateway", cn="gateway", ips=("127.0.0.1",), server=True)
    clients = {
        "spiffe": client_ca.issue(
            d, "spiffe", uris=("spiffe://cluster.local/ns/messaging/sa/sms-gateway",)
        ),
        "cn": client_ca.issue(d, "cn", cn="campaign-runner.marketing"),
        "nameless": client_ca.issue(d, "nameless", cn="gateway-client"),
        "expired": client_ca.issue(d, "expired", cn="sms-gateway.messaging", expired=True),
        "rogue": rogue_ca.issue(
            d, "rogue", uris=("spiffe://cluster.local/ns/messaging/sa/sms-gateway",)
        ),
    }
    registry = yaml.safe_load(REGISTRY_YAML.read_text())
    registry["workloads"] = WORKLOADS
    registry_path = d / "registry.yaml"
    registry_path.write_text(yaml.safe_dump(registry))
    proxy = start_proxy(
        d,
        certs,
        upstreams,
        "--client-ca",
        str(client_ca.write_cert(d / "client-ca.pem")),
        "--tls-cert",
        str(server.cert),
        "--tls-key",
        str(server.key),
        registry=registry_path,
    )
    yield Gateway(proxy, server_ca.write_cert(d / "server-ca.pem"), clients)
    proxy.stop()


def _client_context(gw: Gateway, client: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(gw.server_ca))
    if client is not None:
        issued = gw.clients[client]
        context.load_cert_chain(str(issued.cert), str(issued.key))
    return context


def _read_all(read: Any) -> bytes:
    chunks = []
    while True:
        try:
            chunk = read()
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError, ConnectionResetError):
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def _request(
    gw: Gateway, client: str | None, data: bytes, raw: socket.socket | None = None
) -> bytes:
    """Send `data` over a TLS connection to the gateway (on `raw` if given, a connected
    socket); the bytes answered until it closes."""
    raw = raw or socket.create_connection(("127.0.0.1", gw.proxy.port), timeout=10)
    with _client_context(gw, client).wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        tls.sendall(data)
        return _read_all(lambda: tls.recv(65536))


def _get(host: str, port: int, marker: str, *extra: str) -> bytes:
    headers = "".join(f"{h}\r\n" for h in extra)
    return (
        f"GET http://{host}:{port}/{marker} HTTP/1.1\r\nHost: {host}:{port}\r\n{headers}"
        "Connection: close\r\n\r\n"
    ).encode()


def _event(proxy: ProxyProcess, name: str) -> dict[str, Any]:
    """The first log line of event `name` (the port file is written before proxy.listening)."""
    deadline = time.monotonic() + 5
    while True:
        found = [line for line in proxy.logs() if line.get("event") == name]
        if found or time.monotonic() > deadline:
            assert found, f"no {name} line"
            return found[0]
        time.sleep(0.05)


def test_start_up_line_says_sources_come_from_certificates_and_binding_is_on(
    gateway: Gateway,
) -> None:
    listening = _event(gateway.proxy, "proxy.listening")
    assert listening["source_from"] == "client_certificate"
    assert listening["source_binding"] is True
    assert listening["workloads"] == 2
    assert "source_workload" not in listening  # not the environment's test-workload


def test_spiffe_client_of_a_bound_workload_is_allowed(
    gateway: Gateway, upstreams: Upstreams
) -> None:
    marker = f"spiffe-{uuid.uuid4().hex}"
    status, _, _ = parse_response(
        _request(gateway, "spiffe", _get("api.vendor.test", upstreams.http_port, marker))
    )
    assert status == 200
    (line,) = gateway.proxy.decisions_for(marker)
    assert (line["source_workload"], line["source_namespace"]) == ("sms-gateway", "messaging")
    assert line["action"] == "allow"
    assert len(upstreams.find(marker)) == 1


def test_cn_client_declaring_a_purpose_not_its_own_is_denied(
    gateway: Gateway, upstreams: Upstreams
) -> None:
    marker = f"cn-{uuid.uuid4().hex}"
    # Headers that look like a source are neither honoured nor forwarded.
    data = _get(
        "api.vendor.test",
        upstreams.http_port,
        marker,
        "X-Sharewall-Source: sms-gateway",
        "X-Sharewall-Namespace: messaging",
        "X-Sharewall-Workload: sms-gateway",
    )
    status, _, body = parse_response(_request(gateway, "cn", data))
    assert status == 403
    assert [r["code"] for r in orjson.loads(body)["reasons"]] == ["PURPOSE_NOT_ALLOWED_FOR_SOURCE"]
    (line,) = gateway.proxy.decisions_for(marker)
    assert (line["source_workload"], line["source_namespace"]) == (
        "campaign-runner",
        "marketing",
    )
    assert upstreams.find(marker) == []


def test_cn_client_with_its_own_purpose_is_allowed(gateway: Gateway, upstreams: Upstreams) -> None:
    marker = f"cn-own-{uuid.uuid4().hex}"
    data = _get("api.vendor.test", upstreams.http_port, marker, "X-Sharewall-Purpose: marketing")
    status, _, _ = parse_response(_request(gateway, "cn", data))
    # The vendor holds no marketing grant: the policy still answers, but not for the source.
    assert status == 403
    (line,) = gateway.proxy.decisions_for(marker)
    assert "PURPOSE_NOT_ALLOWED_FOR_SOURCE" not in line["reason_codes"]
    assert line["source_workload"] == "campaign-runner"


@pytest.mark.parametrize(
    ("client", "reason"),
    [
        pytest.param(None, "handshake", id="no certificate"),
        pytest.param("rogue", "handshake", id="certificate from another CA"),
        pytest.param("expired", "handshake", id="expired certificate"),
        pytest.param("nameless", "no_workload", id="valid certificate naming no workload"),
    ],
)
def test_client_without_a_valid_certificate_is_refused(
    gateway: Gateway, upstreams: Upstreams, client: str | None, reason: str
) -> None:
    marker = f"refused-{uuid.uuid4().hex}"
    raw = socket.create_connection(("127.0.0.1", gateway.proxy.port), timeout=10)
    address = f"127.0.0.1:{raw.getsockname()[1]}"
    try:
        answer = _request(
            gateway, client, _get("api.vendor.test", upstreams.http_port, marker), raw
        )
    except (ssl.SSLError, OSError):
        answer = b""  # refused during the handshake (TLS 1.2) or on the first read (TLS 1.3)
    assert answer == b""
    # This connection's line, told apart by its address: the proxy logs a refusal after it
    # closed the connection, so the line of the test before may land after this one began.
    refusals = gateway.proxy.lines_where(
        lambda e: e.get("event") == "proxy.client_refused" and e.get("client") == address
    )
    assert len(refusals) == 1, refusals
    assert refusals[0]["reason"] == reason
    assert upstreams.find(marker) == []
    assert gateway.proxy.decisions_for(marker, timeout=0.2) == []
    with urllib.request.urlopen(f"{gateway.proxy.admin_url}/metrics", timeout=5) as resp:
        metrics = resp.read().decode()
    assert f'sharewall_clients_refused_total{{reason="{reason}"}}' in metrics


def test_plain_http_client_is_refused(gateway: Gateway, upstreams: Upstreams) -> None:
    marker = f"plain-{uuid.uuid4().hex}"
    with socket.create_connection(("127.0.0.1", gateway.proxy.port), timeout=10) as raw:
        raw.sendall(_get("api.vendor.test", upstreams.http_port, marker))
        answer = _read_all(lambda: raw.recv(65536))
    assert not answer.startswith(b"HTTP/")
    assert upstreams.find(marker) == []


class _TlsInTls:
    """A TLS session inside another one (an HTTPS proxy's CONNECT tunnel), over memory BIOs."""

    def __init__(self, outer: ssl.SSLSocket, context: ssl.SSLContext, host: str) -> None:
        self.outer = outer
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = context.wrap_bio(self.incoming, self.outgoing, server_hostname=host)
        self._run(self.obj.do_handshake)

    def _run(self, step: Any, *args: Any) -> Any:
        while True:
            try:
                result = step(*args)
            except ssl.SSLWantReadError:
                self._flush()
                data = self.outer.recv(65536)
                if data:
                    self.incoming.write(data)
                else:
                    self.incoming.write_eof()
                continue
            self._flush()
            return result

    def _flush(self) -> None:
        data = self.outgoing.read()
        if data:
            self.outer.sendall(data)

    def sendall(self, data: bytes) -> None:
        self._run(self.obj.write, data)

    def recv(self) -> bytes:
        return self._run(self.obj.read, 65536)


def test_intercepted_connect_through_the_gateway_carries_the_client_source(
    gateway: Gateway, certs: Certs, upstreams: Upstreams
) -> None:
    marker = f"connect-{uuid.uuid4().hex}"
    authority = f"api.vendor.test:{upstreams.https_port}"
    with socket.create_connection(("127.0.0.1", gateway.proxy.port), timeout=10) as raw:
        context = _client_context(gateway, "spiffe")
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as outer:
            outer.sendall(f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode())
            head = b""
            while b"\r\n\r\n" not in head:
                head += outer.recv(1)
            assert head.startswith(b"HTTP/1.1 200")
            inner = _TlsInTls(
                outer,
                ssl.create_default_context(cafile=str(certs.proxy_ca_cert)),
                "api.vendor.test",
            )
            inner.sendall(
                f"GET /{marker} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n".encode()
            )
            answer = _read_all(inner.recv)
    status, _, _ = parse_response(answer)
    assert status == 200
    lines = gateway.proxy.decisions_for(marker)
    assert [(x["source_workload"], x["source_namespace"]) for x in lines] == [
        ("sms-gateway", "messaging")
    ]
    assert len(upstreams.find(marker)) == 1


def test_sidecar_source_is_its_settings_and_no_header_overrides_it(
    tmp_path: Path, certs: Certs, upstreams: Upstreams
) -> None:
    registry = yaml.safe_load(REGISTRY_YAML.read_text())
    registry["workloads"] = WORKLOADS
    path = tmp_path / "registry.yaml"
    path.write_text(yaml.safe_dump(registry))
    # The harness's environment says test-workload/test-ns; the flags win over it.
    proxy = start_proxy(
        tmp_path,
        certs,
        upstreams,
        "--source",
        "campaign-runner",
        "--namespace",
        "marketing",
        registry=path,
    )
    try:
        listening = _event(proxy, "proxy.listening")
        assert listening["source_from"] == "settings"
        assert (listening["source_workload"], listening["source_namespace"]) == (
            "campaign-runner",
            "marketing",
        )
        assert (listening["source_binding"], listening["workloads"]) == (True, 2)
        marker = f"sidecar-{uuid.uuid4().hex}"
        request = _get(
            "api.vendor.test",
            upstreams.http_port,
            marker,
            "X-Sharewall-Source: sms-gateway",
            "X-Sharewall-Namespace: messaging",
        )
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as s:
            s.sendall(request)
            answer = _read_all(lambda: s.recv(65536))
        status, _, _ = parse_response(answer)
        assert status == 403
        (line,) = proxy.decisions_for(marker)
        assert (line["source_workload"], line["source_namespace"]) == (
            "campaign-runner",
            "marketing",
        )
        assert line["reason_codes"] == ["PURPOSE_NOT_ALLOWED_FOR_SOURCE"]
    finally:
        proxy.stop()


def test_registry_without_workloads_says_binding_is_off(
    tmp_path: Path, certs: Certs, upstreams: Upstreams
) -> None:
    proxy = start_proxy(tmp_path, certs, upstreams)
    try:
        listening = _event(proxy, "proxy.listening")
        assert (listening["source_binding"], listening["workloads"]) == (False, 0)
        assert (listening["source_workload"], listening["source_namespace"]) == (
            "test-workload",
            "test-ns",
        )
        loaded = _event(proxy, "snapshot.loaded")
        assert (loaded["source_binding"], loaded["workloads"]) == (False, 0)
    finally:
        proxy.stop()
