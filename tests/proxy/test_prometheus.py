"""prometheus_client without its package `__init__`: the format a scrape gets, and the library whole."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client.exposition import choose_encoder

from proxy.metrics import ProxyMetrics

REPO = Path(__file__).resolve().parents[2]

# Prometheus 3's default Accept, then 2.x's, then what other clients send.
ACCEPTS = [
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,"
    "application/openmetrics-text;version=0.0.1;q=0.4,"
    "text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,text/plain;version=0.0.4;q=0.2,*/*;q=0.1",
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    "application/openmetrics-text",
    "application/openmetrics-text; version=1.0.0; escaping=dots",
    "application/openmetrics-text; version=1.0.0; escaping=nonsense",
    "application/openmetrics-text; version=2.0.0",
    "application/openmetrics-text; version=0.0.1",
    "application/openmetrics-text; version=0.0.1, text/plain; version=1.0.0",
    "text/plain; version=0.0.4, application/openmetrics-text; version=1.0.0",
    "text/plain; version=1.0.0; escaping=underscores",
    "text/html,application/xhtml+xml,*/*;q=0.8",
    "*/*",
    "",
]


def _metrics() -> ProxyMetrics:
    metrics = ProxyMetrics()
    metrics.observe_record({"action": "block", "reason_codes": ['A"q"\\', "B\nline"]})
    metrics.observe_record({"action": "allow", "reason_codes": [], "inspect_ms": 0.3})
    metrics.open_connections.set(3)
    return metrics


@pytest.mark.parametrize("accept", ACCEPTS)
def test_every_scrape_gets_what_prometheus_clients_choose_encoder_answers(accept: str) -> None:
    metrics = _metrics()
    encoder, content_type = choose_encoder(accept)
    assert metrics.exposition(accept) == (content_type, encoder(metrics.registry))


def test_prometheus_gets_openmetrics_and_curl_the_text_format() -> None:
    metrics = _metrics()
    content_type, body = metrics.exposition(ACCEPTS[0])
    assert content_type.startswith("application/openmetrics-text; version=1.0.0;")
    assert body.endswith(b"# EOF\n")
    content_type, body = metrics.exposition("*/*")
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    assert b"# EOF" not in body
    assert b"sharewall_open_connections 3.0\n" in body


_FRESH = """
import sys
from proxy.metrics import ProxyMetrics
from proxy.prometheus import OPENMETRICS_ACCEPT

metrics = ProxyMetrics()
metrics.observe_record({"action": "allow", "reason_codes": []})
print(metrics.exposition(OPENMETRICS_ACCEPT)[1].decode().splitlines()[2])
heavy = ("prometheus_client.exposition", "http.server", "urllib.request", "wsgiref", "email")
print(sorted(m for m in heavy if m in sys.modules))

# Other code in the process still gets the whole library, default registry included.
from prometheus_client import REGISTRY, Counter, generate_latest

Counter("other_calls", "Calls of some other code.").inc()
print([ln for ln in generate_latest(REGISTRY).decode().splitlines() if ln.startswith("other_calls_t")][0])
print(metrics.exposition("*/*")[1].decode().splitlines()[2])
"""


def test_the_proxy_loads_no_text_format_and_other_code_still_gets_the_whole_library() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _FRESH], capture_output=True, text=True, cwd=REPO, check=True
    ).stdout.splitlines()
    assert out == [
        'sharewall_decisions_total{action="allow",reason="none"} 1.0',
        "[]",
        "other_calls_total 1.0",
        'sharewall_decisions_total{action="allow",reason="none"} 1.0',
    ]
