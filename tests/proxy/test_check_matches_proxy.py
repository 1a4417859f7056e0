"""`sharewall check` and the live proxy give the same decision on every corpus case.

Each case of tests/corpus/ is sent through a real `sharewall proxy` process (absolute-form, the
purpose in `X-Sharewall-Purpose`, the case's headers and body) on the sample registry, to
loopback upstream servers that the case's host is pinned to with `--resolve`; the proxy's
decision line is compared with what `check_call` (the function behind `sharewall check`)
decides for the same call: action, reason codes and categories.

The loopback servers listen on ephemeral ports, so each case's URL is moved to the server's
port (https to the TLS one, http to the plain one); the sample registry has no port-specific
host patterns, and a first test shows that `check` decides every moved case exactly as the
original one, so the comparison covers the corpus as written.
"""

from __future__ import annotations

import asyncio
import dataclasses
import http.client
import importlib.util
import sys
import time
from pathlib import Path

import pytest
import trustme
from proxy_harness import Certs, ProxyProcess, run_upstreams

from sharewall.hosts import is_ip_literal, parse_host_pattern, parse_url
from sharewall.registry_file import load_registry_file

# The corpus loader lives beside the precision/recall report (tests/test_corpus.py reads it too).
_spec = importlib.util.spec_from_file_location(
    "corpus_report", Path(__file__).resolve().parents[2] / "bench" / "corpus_report.py"
)
corpus = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("corpus_report", corpus)
_spec.loader.exec_module(corpus)
SAMPLE = corpus.SAMPLE_REGISTRY
_TWILIO = "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages.json"
_FORM = b"To=%2B6591234567&From=%2B6568001234&Body=Your+QWIQI+code+is+482913"
_ALLOW = corpus.Expectation("allow", frozenset(), frozenset())
# Where `check` used to differ from the proxy: headers that never leave the pod were inspected.
_FORMER_DIVERGENCES = [
    corpus.Case(
        id=f"pod-only-header:{name}",
        description="a header the proxy drops is not shared, so not inspected",
        method="POST",
        url=_TWILIO,
        headers=(("Content-Type", "application/x-www-form-urlencoded"), (name, value)),
        body=_FORM,
        purpose="service_delivery",
        source_workload=None,
        source_namespace=None,
        expect=_ALLOW,
    )
    for name, value in (
        ("Proxy-Authorization", "Bearer sk_live_abcdef0123456789SECRET"),
        ("X-Sharewall-Note", "card 4111 1111 1111 1111, ssn 123-45-6789"),
    )
]
CASES = [*corpus.load_cases(), *_FORMER_DIVERGENCES]


def _moved(case, upstreams):
    target = parse_url(case.url)
    port = upstreams.https_port if target.scheme == "https" else upstreams.http_port
    host = f"[{target.host}]" if ":" in target.host else target.host
    return dataclasses.replace(case, url=f"{target.scheme}://{host}:{port}{target.path}")


def _summary(decision) -> tuple[str, list[str], list[str], str | None]:
    return (
        decision.action,
        sorted(decision.reason_codes),
        sorted(decision.categories),
        decision.fault,
    )


@pytest.fixture(scope="module")
def corpus_upstreams(tmp_path_factory):
    """Echo servers (plain and TLS) with a certificate for every corpus host."""
    d: Path = tmp_path_factory.mktemp("corpus-certs")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(d / "upstream-ca.pem"))
    hosts = sorted({parse_url(c.url).host for c in CASES})
    leaf = ca.issue_cert(*hosts)
    certs = Certs(d / "none.pem", d / "none.key", d / "upstream-ca.pem", leaf)
    with run_upstreams(certs) as ups:
        yield certs, ups


def test_the_sample_registry_leaves_port_and_source_out_of_the_decision() -> None:
    # Why moving a case to the loopback port, and one proxy --source for every case, keep
    # the comparison exact: no pattern names a port, and no workload binds a source.
    snapshot = load_registry_file(SAMPLE)
    assert all(parse_host_pattern(h).port is None for r in snapshot.recipients for h in r.hosts)
    assert not getattr(snapshot, "workloads", ())


def test_headers_that_stay_in_the_pod_are_not_inspected_by_check() -> None:
    decisions = asyncio.run(corpus.decide_cases(_FORMER_DIVERGENCES))
    for decision in decisions.values():
        assert decision.allow, decision.reason_codes
        assert "credentials.secret" not in decision.categories


def test_check_decides_each_moved_case_as_the_original(corpus_upstreams) -> None:
    _certs, ups = corpus_upstreams
    original = asyncio.run(corpus.decide_cases(CASES))
    moved = asyncio.run(corpus.decide_cases([_moved(c, ups) for c in CASES]))
    assert {k: _summary(v) for k, v in moved.items()} == {
        k: _summary(v) for k, v in original.items()
    }


def test_check_and_the_live_proxy_decide_every_corpus_case_alike(
    corpus_upstreams, tmp_path
) -> None:
    certs, ups = corpus_upstreams
    cases = [_moved(c, ups) for c in CASES]
    # Names only: an IP literal or a localhost name stays unpinned, so the proxy refuses it
    # (DESTINATION_FORBIDDEN) as `check` does.
    pins = sorted(
        {(t.host, t.port) for t in map(parse_url, (c.url for c in cases)) if _pinnable(t.host)}
    )
    args = ["--registry-file", str(SAMPLE), "--upstream-ca", str(certs.upstream_ca)]
    for host, port in pins:
        args += ["--resolve", f"{host}:{port}:127.0.0.1"]
    checked = asyncio.run(corpus.decide_cases(cases))

    proxy = ProxyProcess(tmp_path, args)
    try:
        statuses = []
        client = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=30)
        for case in cases:
            headers = dict(case.headers)
            if case.purpose is not None:
                headers["X-Sharewall-Purpose"] = case.purpose
            # Absolute form: http.client sends the URL as the target and Host from it.
            client.request(case.method, case.url, body=case.body or None, headers=headers)
            response = client.getresponse()
            response.read()
            statuses.append(response.status)
            if response.will_close:
                client.close()
                client = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=30)
        client.close()
        lines = _decision_lines(proxy, len(cases))
    finally:
        proxy.stop()

    mismatches = {}
    for case, line, status in zip(cases, lines, statuses, strict=True):
        assert line["method"] == case.method and line["host"] == parse_url(case.url).host
        live = (line["action"], sorted(line["reason_codes"]), sorted(line["categories"]))
        offline = _summary(checked[case.id])
        if live != offline[:3] or offline[3] is not None or line["fault"] is not None:
            mismatches[case.id] = {"proxy": live, "check": offline}
        # What the proxy answered is what the decision says (403 for a deny, never a pass).
        assert (status == 403) == (line["action"] == "deny"), case.id
    assert mismatches == {}

    # Allowed calls reached the loopback upstream with the body intact and no sharewall header.
    allowed = [c for c, s in zip(cases, statuses, strict=True) if s == 200]
    assert len(allowed) >= 30
    seen = list(ups.seen)
    assert len(seen) == len(allowed)
    for case, got in zip(allowed, seen, strict=True):
        assert got.method == case.method, case.id
        encoded = any(k.lower() == "content-encoding" for k, _ in case.headers)
        assert encoded or got.body == case.body, case.id  # aiohttp's server decompresses
        assert not any(k.lower().startswith("x-sharewall-") for k, _ in got.headers), case.id


def _pinnable(host: str) -> bool:
    return not is_ip_literal(host) and host != "localhost" and not host.endswith(".localhost")


def _decision_lines(proxy: ProxyProcess, count: int, timeout: float = 20.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        lines = [e for e in proxy.logs() if e.get("event") == "egress.decision"]
        if len(lines) >= count or time.monotonic() > deadline:
            assert len(lines) == count, f"{len(lines)} decision lines for {count} calls"
            return lines
        time.sleep(0.1)
