"""The admin server on plain asyncio: routes, keep-alive, HEAD, and what it refuses."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from proxy.admin import AdminServer, create_admin_app
from proxy.metrics import ProxyMetrics
from proxy.settings import Settings

SETTINGS = Settings(registry_file=Path("unused.yaml"), header_timeout=2.0)


async def _exchange(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    try:
        async with asyncio.timeout(5):
            return await reader.read()
    finally:
        writer.close()


@pytest.fixture
async def admin() -> tuple[AdminServer, ProxyMetrics, list[str]]:
    metrics = ProxyMetrics()
    reasons: list[str] = []
    server = AdminServer(
        create_admin_app(metrics, lambda: reasons), "127.0.0.1", 0, settings=SETTINGS
    )
    address = await server.start()
    server.port = address[1]  # type: ignore[attr-defined]
    yield server, metrics, reasons
    await server.close()


async def test_readiness_metrics_and_health_on_one_kept_alive_connection(admin):
    server, metrics, reasons = admin
    metrics.observe_record({"action": "deny", "reason_codes": ["CATEGORY_NOT_APPROVED"]})
    reasons.append("no registry snapshot loaded into a ready policy engine")
    raw = await _exchange(
        server.port,
        b"GET /readyz HTTP/1.1\r\nHost: a\r\n\r\n"
        b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n"
        b"GET /healthz?x=1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    answers = raw.split(b"HTTP/1.1 ")[1:]
    assert [a[:3] for a in answers] == [b"503", b"200", b"200"]
    assert b'"reasons":["no registry snapshot loaded into a ready policy engine"]' in answers[0]
    assert b"Content-Type: text/plain; version=0.0.4" in answers[1]
    assert (
        b'sharewall_decisions_total{action="deny",reason="CATEGORY_NOT_APPROVED"} 1.0' in answers[1]
    )
    assert answers[2].endswith(b'{"status":"ok"}')


async def test_a_prometheus_scrape_gets_openmetrics(admin):
    server, metrics, _ = admin
    metrics.observe_record({"action": "deny", "reason_codes": ["CATEGORY_NOT_APPROVED"]})
    raw = await _exchange(
        server.port,
        b"GET /metrics HTTP/1.1\r\nConnection: close\r\n"
        b"Accept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5\r\n\r\n",
    )
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n")
    assert (
        b"Content-Type: application/openmetrics-text; version=1.0.0; charset=utf-8;"
        b" escaping=underscores\r\n"
    ) in raw
    assert b'sharewall_decisions_total{action="deny",reason="CATEGORY_NOT_APPROVED"} 1.0' in raw
    assert raw.endswith(b"# EOF\n")


async def test_head_gets_the_head_only(admin):
    server, _, _ = admin
    raw = await _exchange(server.port, b"HEAD /healthz HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Content-Length: 15\r\n" in raw
    assert raw.endswith(b"\r\n\r\n")


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        pytest.param(b"GET /nope HTTP/1.1\r\nConnection: close\r\n\r\n", b"404", id="unknown path"),
        pytest.param(
            b"POST /readyz HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}", b"405", id="not a GET"
        ),
        pytest.param(b"GARBAGE\r\n\r\n", b"400", id="not HTTP"),
    ],
)
async def test_what_the_admin_port_refuses(admin, request_bytes, status):
    server, _, _ = admin
    raw = await _exchange(server.port, request_bytes)
    assert raw[9:12] == status
    assert b"Connection: close" in raw
