"""The impact replay decides only the facts a change can affect, with the same result.

`registry.impact.replay` skips a fact whose recipient, recipient entry and source workload are
the same in both snapshots. Each case below replays one window with the skip and without it
(every fact decided, real regorus) and expects the same flips.
"""

from __future__ import annotations

import copy
import itertools
from typing import Any

import pytest

from registry.impact import Fact, Window, candidate_snapshot, replay
from sharewall.registry_file import parse_registry_document
from sharewall.snapshot import Snapshot

DAY = "2026-11-30"
WINDOW = Window.last_days(7)


def recipient(rid: str, host: str, categories: list[str], **over: Any) -> dict[str, Any]:
    return {
        "id": rid,
        "name": rid,
        "kind": "vendor",
        "status": "approved",
        "regions": ["SG"],
        "hosts": [host],
        "grants": [
            {"purpose": "customer_support", "categories": categories, "legal_basis": "contract"},
            {"purpose": "billing", "categories": ["contact.email"], "legal_basis": "contract"},
        ],
        **over,
    }


LIVE: dict[str, Any] = {
    "recipients": [
        recipient("zendesk", "api.zendesk.test", ["contact.email", "contact.phone_number"]),
        recipient("twilio", "api.twilio.test", ["contact.phone_number", "comms.content"]),
        recipient("stripe", "*.stripe.test", ["contact.email"]),
    ]
}
WORKLOADS = [
    {"namespace": "support", "name": "support-app", "status": "approved",
     "purposes": ["customer_support", "billing"]},
    {"namespace": "billing", "name": "invoicer", "status": "approved", "purposes": ["billing"]},
]  # fmt: skip


def facts() -> list[Fact]:
    """Calls from two sources to each recipient and an unregistered host, in many shapes."""
    out = []
    hosts = ["api.zendesk.test", "api.twilio.test", "pay.stripe.test", "api.newco.test"]
    sources = [("support-app", "support"), ("invoicer", "billing")]
    purposes = ["customer_support", "billing"]
    categories = [(), ("contact.email",), ("contact.phone_number",), ("comms.content",)]
    for n, (host, (workload, ns), purpose, cats, https) in enumerate(
        itertools.product(hosts, sources, purposes, categories, (True, False))
    ):
        out.append(
            Fact(
                source_workload=workload,
                source_namespace=ns,
                host=host,
                port=443 if https else 80,
                recipient_id="",
                purpose=purpose,
                categories=cats,
                scheme="https" if https else "http",
                inspected=True,
                tls_upstream=https,
                complete=True,
                count=n + 1,
            )
        )
    return out


def snapshot(doc: dict[str, Any]) -> Snapshot:
    return parse_registry_document(doc)


def changed(doc: dict[str, Any], rid: str, **over: Any) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    for r in doc["recipients"]:
        if r["id"] == rid:
            r.update(over)
    return doc


CASES = {
    "a grant narrowed": changed(
        LIVE,
        "zendesk",
        grants=[
            {"purpose": "customer_support", "categories": ["contact.email"]},
            {"purpose": "billing", "categories": ["contact.email"]},
        ],
    ),
    "a recipient suspended": changed(LIVE, "twilio", status="suspended"),
    "an unknown host registered": {
        "change": {"recipients": [recipient("newco", "api.newco.test", ["contact.email"])]}
    },
    "a host moved to another recipient": changed(
        changed(LIVE, "stripe", hosts=["api.stripe.test"]),
        "zendesk",
        hosts=["api.zendesk.test", "pay.stripe.test"],
    ),
    "source binding switched on": {**LIVE, "workloads": WORKLOADS},
}
BOUND_CASES = {
    "a workload's purposes edited": {
        **LIVE,
        "workloads": [WORKLOADS[0], {**WORKLOADS[1], "purposes": ["billing", "customer_support"]}],
    },
    "a workload limited to some recipients": {
        **LIVE,
        "workloads": [{**WORKLOADS[0], "recipients": ["zendesk"]}, WORKLOADS[1]],
    },
    "source binding switched off": LIVE,
}


def both(live: Snapshot, candidate_doc: dict[str, Any]):
    candidate = candidate_snapshot(live, candidate_doc)
    full = replay(facts(), live, candidate, WINDOW, DAY, only_affected=False)
    skipping = replay(facts(), live, candidate, WINDOW, DAY)
    return full, skipping


@pytest.mark.parametrize(
    ("live_doc", "candidate_doc"),
    [pytest.param(LIVE, doc, id=name) for name, doc in CASES.items()]
    + [
        pytest.param({**LIVE, "workloads": WORKLOADS}, doc, id=name)
        for name, doc in BOUND_CASES.items()
    ],
)
def test_skipping_unaffected_facts_gives_the_flips_of_deciding_every_fact(live_doc, candidate_doc):
    full, skipping = both(snapshot(live_doc), candidate_doc)
    assert full.flips, "the case must flip something, or it checks nothing"
    assert skipping.flips == full.flips
    assert skipping.totals == full.totals
    assert skipping.replayed == full.replayed and skipping.distinct == full.distinct


def test_a_one_recipient_change_decides_only_that_recipients_facts():
    full, skipping = both(snapshot(LIVE), CASES["a grant narrowed"])
    assert skipping.flips == full.flips
    zendesk_facts = sum(1 for f in facts() if f.host == "api.zendesk.test")
    assert full.evaluations == 2 * len(facts())
    assert skipping.evaluations == 2 * zendesk_facts


def test_an_unchanged_registry_decides_nothing():
    live = snapshot(LIVE)
    full, skipping = both(live, LIVE)
    assert full.flips == skipping.flips == []
    assert skipping.evaluations == 0


def test_the_same_registry_in_another_order_decides_nothing():
    """The database and a file may list grants, hosts and categories in other orders."""
    reordered = copy.deepcopy(LIVE)
    for r in reordered["recipients"]:
        r["grants"] = [
            {**g, "categories": list(reversed(g["categories"]))} for g in reversed(r["grants"])
        ]
    reordered["recipients"].reverse()
    full, skipping = both(snapshot(LIVE), reordered)
    assert full.flips == skipping.flips == []
    assert skipping.evaluations == 0


def test_a_workload_change_may_name_a_live_recipient_it_does_not_carry():
    """What the approvals page sends for a proposed workload: the workload alone."""
    live = snapshot(LIVE)
    workload = {**WORKLOADS[0], "recipients": ["zendesk"]}
    candidate = candidate_snapshot(live, {"change": {"workloads": [workload]}})
    assert [w.recipients for w in candidate.workloads] == [("zendesk",)]
    assert {r.id: r for r in candidate.recipients} == {r.id: r for r in live.recipients}
    with pytest.raises(ValueError, match="unknown recipient ids"):
        candidate_snapshot(live, {"change": {"workloads": [{**workload, "recipients": ["nope"]}]}})
