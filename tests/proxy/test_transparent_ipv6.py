"""Transparent capture over IPv6 (`IP6T_SO_ORIGINAL_DST`, `capture-rules --ipv6`) and IPv4
through the same dual-stack listener (`[::]`, IPv4-mapped peers): in namespaces, as in
test_transparent.py.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
from netns_harness import (
    OTHER_ADDR6,
    SERVER_ADDR,
    SERVER_ADDR6,
    Pod,
    missing_requirement,
    transparent_pod,
)

_why = missing_requirement() or (
    "needs ip6tables-restore" if shutil.which("ip6tables-restore") is None else None
)
pytestmark = pytest.mark.skipif(_why is not None, reason=str(_why))


@pytest.fixture(scope="module")
def pod() -> Iterator[Pod]:
    with transparent_pod(ipv6=True) as running:
        yield running


def test_plain_http_over_ipv6_is_captured_and_passes(pod: Pod) -> None:
    answer = pod.http(SERVER_ADDR6, "api.vendor.test", path="/tp6-http", body="ref=6")
    assert answer["status"] == 200
    [seen] = pod.seen("/tp6-http")
    assert seen["server"] == SERVER_ADDR6 and seen["body"] == "ref=6"
    line = pod.decision_where(path="/tp6-http")
    assert line["action"] == "allow" and line["host"] == "api.vendor.test"


def test_https_over_ipv6_is_intercepted(pod: Pod) -> None:
    answer = pod.https(SERVER_ADDR6, "api.vendor.test", path="/tp6-intercept", body="ref=7")
    assert answer["status"] == 200 and answer["issuer"] == "sharewall"
    assert pod.seen("/tp6-intercept")[0]["body"] == "ref=7"


def test_ipv6_address_the_name_does_not_lead_to_is_a_mismatch(pod: Pod) -> None:
    answer = pod.http(OTHER_ADDR6, "api.vendor.test", path="/tp6-mismatch")
    assert answer["status"] == 403 and "DESTINATION_MISMATCH" in answer["body"]
    assert pod.seen("/tp6-mismatch") == []


def test_ipv4_through_the_dual_stack_listener_reads_the_ipv4_original_destination(
    pod: Pod,
) -> None:
    answer = pod.https(SERVER_ADDR, "tunnel.vendor.test", path="/tp6-v4-splice")
    assert answer["status"] == 200 and answer["issuer"] != "sharewall"
    assert pod.seen("/tp6-v4-splice")[0]["server"] == SERVER_ADDR
