"""An egress gateway's client certificate names the calling workload: SPIFFE ID, else the CN."""

from __future__ import annotations

from pathlib import Path

import pytest
from client_certs import TestCA

from proxy.client_identity import (
    ClientIdentity,
    ClientIdentityError,
    identity_from_certificate,
)


@pytest.fixture(scope="module")
def ca() -> TestCA:
    return TestCA("workloads test CA")


NAMED = [
    pytest.param(
        {"uris": ("spiffe://cluster.local/ns/messaging/sa/sms-gateway",)},
        ClientIdentity("messaging", "sms-gateway", "spiffe"),
        id="spiffe id",
    ),
    pytest.param(
        {
            "uris": ("https://example.com/x", "spiffe://prod.example/ns/billing/sa/billing-api"),
            "cn": "something.else",
        },
        ClientIdentity("billing", "billing-api", "spiffe"),
        id="spiffe id wins over the cn and other uris",
    ),
    pytest.param(
        {"cn": "system:serviceaccount:support:care-console"},
        ClientIdentity("support", "care-console", "cn"),
        id="cn as a kubernetes service account user name",
    ),
    pytest.param(
        {"cn": "sms-gateway.messaging"},
        ClientIdentity("messaging", "sms-gateway", "cn"),
        id="cn as name.namespace",
    ),
    pytest.param(
        {"cn": "sms.gateway.v2.messaging"},
        ClientIdentity("messaging", "sms.gateway.v2", "cn"),
        id="cn split at the last dot",
    ),
]


@pytest.mark.parametrize(("fields", "expected"), NAMED)
def test_certificate_names_the_workload(
    ca: TestCA, tmp_path: Path, fields: dict, expected: ClientIdentity
) -> None:
    issued = ca.issue(tmp_path, "client", **fields)
    assert identity_from_certificate(issued.der()) == expected


NAMELESS = [
    pytest.param({"cn": "sms-gateway"}, "NAME.NAMESPACE", id="cn without namespace"),
    pytest.param({}, "common name", id="no cn no san"),
    pytest.param(
        {"uris": ("spiffe://cluster.local/workload/sms-gateway",), "cn": "sms-gateway.messaging"},
        "spiffe://TRUST_DOMAIN",
        id="spiffe id of another shape is not bypassed by the cn",
    ),
    pytest.param(
        {"uris": ("spiffe:///ns/messaging/sa/sms-gateway",)},
        "spiffe://TRUST_DOMAIN",
        id="spiffe id without trust domain",
    ),
    pytest.param(
        {"uris": ("spiffe://td/ns/messaging/sa/sms-gateway", "spiffe://td/ns/other/sa/x")},
        "more than one",
        id="two spiffe ids",
    ),
    pytest.param(
        {"uris": ("spiffe://td/ns/Messaging/sa/sms-gateway",)},
        "Kubernetes",
        id="namespace not a dns label",
    ),
    pytest.param(
        {"cn": "system:serviceaccount:support"}, "system:serviceaccount", id="sa cn without name"
    ),
    pytest.param({"cn": "Sms Gateway.messaging"}, "Kubernetes", id="cn name not a dns name"),
]


@pytest.mark.parametrize(("fields", "fragment"), NAMELESS)
def test_certificate_naming_no_workload_is_refused(
    ca: TestCA, tmp_path: Path, fields: dict, fragment: str
) -> None:
    issued = ca.issue(tmp_path, "client", **fields)
    with pytest.raises(ClientIdentityError, match=fragment):
        identity_from_certificate(issued.der())


def test_garbage_is_not_a_certificate() -> None:
    with pytest.raises(ClientIdentityError, match="unreadable"):
        identity_from_certificate(b"\x30\x03junk")
