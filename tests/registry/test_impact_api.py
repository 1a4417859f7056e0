"""`POST /v1/impact`: recorded facts replayed with a candidate registry (real regorus, real DB)."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime, timedelta

import orjson
import pytest


def fact(recipient: str, host: str, categories: list[str], count: int, **over) -> dict:
    """A fact row as `proxy.ledger` ships it."""
    minute = (datetime.now(UTC) - timedelta(hours=1)).replace(second=0, microsecond=0)
    row = {
        "kind": "fact",
        "minute": minute.isoformat(),
        "source_workload": "support-app",
        "source_namespace": "support",
        "host": host,
        "port": 443,
        "recipient_id": recipient,
        "purpose": "customer_support",
        "categories": categories,
        "scheme": "https",
        "inspected": True,
        "tls_upstream": True,
        "complete": True,
        "verdict": "allow",
        "reason_codes": [],
        "count": count,
    }
    return {**row, **over}


async def ship(client, auth, rows: list[dict]) -> None:
    body = gzip.compress(orjson.dumps({"proxy_id": "p1", "decisions": [], "ledger": rows}))
    headers = {**auth("proxy"), "Content-Type": "application/json", "Content-Encoding": "gzip"}
    resp = await client.post("/v1/decisions", data=body, headers=headers)
    assert resp.status == 200
    assert (await resp.json())["rejected"] == []


def recipient(rid: str, host: str, categories: list[str], status: str = "approved") -> dict:
    return {
        "id": rid,
        "name": rid,
        "kind": "vendor",
        "status": status,
        "regions": ["SG"],
        "hosts": [host],
        "grants": [
            {"purpose": "customer_support", "categories": categories, "legal_basis": "contract"}
        ],
    }


async def approved(client, auth, rid: str, host: str, categories: list[str]) -> None:
    """Propose (engineer) and approve (security) a recipient: live in the snapshot."""
    body = recipient(rid, host, categories)
    del body["status"]
    created = await client.post("/v1/recipients", json=body, headers=auth("engineer"))
    assert created.status == 201, await created.text()
    resp = await client.post(
        f"/v1/recipients/{rid}/approve",
        json={},
        headers={**auth("security"), "If-Match": created.headers["ETag"]},
    )
    assert resp.status == 200, await resp.text()


@pytest.fixture
async def live(client, auth, unique):
    """An approved recipient, and 17 + 5 recorded calls to it."""
    rid = unique("zendesk")
    host = f"{rid}.example.com"
    await approved(client, auth, rid, host, ["contact.email", "contact.phone_number"])
    await ship(
        client,
        auth,
        [
            fact(rid, host, ["contact.email", "contact.phone_number"], 17),
            fact(rid, host, ["contact.email"], 5),
            # Recorded 10 days ago: outside the default 7-day window.
            fact(
                rid,
                host,
                ["contact.phone_number"],
                1000,
                minute=(datetime.now(UTC) - timedelta(days=10)).replace(second=0).isoformat(),
            ),
        ],
    )
    return rid, host


async def impact(client, auth, body: dict, role: str = "security"):
    return await client.post("/v1/impact", json=body, headers=auth(role))


async def test_dropping_a_granted_category_flips_its_calls_to_deny(client, auth, live):
    rid, host = live
    change = recipient(rid, host, ["contact.email"])  # one recipient's change, merged
    resp = await impact(client, auth, {"registry": change})
    assert resp.status == 200, await resp.text()
    doc = await resp.json()
    mine = [f for f in doc["flips"] if f["recipient_id"] == rid]
    assert mine == [
        {
            "from": "allow",
            "to": "deny",
            "source": "support-app",
            "namespace": "support",
            "recipient_id": rid,
            "purpose": "customer_support",
            "category": "contact.phone_number",
            "reason": "CATEGORY_NOT_APPROVED",
            "count": 17,
        }
    ]
    assert doc["replayed"] >= 22  # the old fact is outside the window
    assert doc["evaluations"] <= 2 * doc["distinct_facts"]


async def test_a_longer_window_replays_older_calls(client, auth, live):
    rid, host = live
    change = recipient(rid, host, ["contact.email"])
    doc = await (await impact(client, auth, {"registry": change, "days": 30})).json()
    [flip] = [f for f in doc["flips"] if f["recipient_id"] == rid]
    assert flip["count"] == 17 + 1000


async def test_suspending_a_recipient_in_yaml_blocks_every_call(client, auth, live):
    rid, host = live
    yaml_text = f"""
change:
  recipients:
    - id: {rid}
      name: {rid}
      kind: vendor
      status: suspended
      regions: [SG]
      hosts: ["{host}"]
"""
    doc = await (await impact(client, auth, {"registry": yaml_text})).json()
    mine = [f for f in doc["flips"] if f["recipient_id"] == rid]
    # No grant in the change either: each call is listed under both of its new reasons.
    assert {(f["reason"], f["count"]) for f in mine} == {
        ("RECIPIENT_INACTIVE", 22),
        ("PURPOSE_NOT_APPROVED", 22),
    }


async def test_an_unchanged_registry_flips_nothing(client, auth, live):
    rid, host = live
    same = recipient(rid, host, ["contact.email", "contact.phone_number"])
    doc = await (await impact(client, auth, {"registry": same})).json()
    assert [f for f in doc["flips"] if f["recipient_id"] == rid] == []


@pytest.mark.parametrize(
    ("body", "status"),
    [
        pytest.param({"registry": {"recipients": "nope"}}, 422, id="not a registry"),
        pytest.param({"registry": "recipients: [\n"}, 422, id="broken yaml"),
        pytest.param({"registry": {"recipients": []}, "days": 0}, 422, id="zero days"),
        pytest.param({"registry": {"recipients": []}, "days": 1000}, 422, id="too many days"),
    ],
)
async def test_bad_candidates_are_422(client, auth, body, status):
    resp = await impact(client, auth, body)
    assert resp.status == status
    assert (await resp.json())["type"].endswith("/validation-error")


@pytest.mark.parametrize(("role", "status"), [("engineer", 200), ("proxy", 403), ("admin", 403)])
async def test_impact_is_for_security_and_engineers(client, auth, role, status):
    resp = await impact(client, auth, {"registry": {"recipients": []}}, role=role)
    assert resp.status == status


async def test_a_re_sent_fact_is_counted_once(client, auth, unique):
    rid = unique("vendor")
    host = f"{rid}.example.com"
    await approved(client, auth, rid, host, ["contact.email"])
    row = fact(rid, host, ["contact.email"], 9)
    other_minute = fact(rid, host, ["contact.email"], 4)
    other_minute["minute"] = (
        (datetime.now(UTC) - timedelta(minutes=2)).replace(second=0, microsecond=0).isoformat()
    )
    await ship(client, auth, [row])
    await ship(client, auth, [row, other_minute])  # a retry after a lost answer, plus news
    change = recipient(rid, host, ["contact.name"])
    flips = (await (await impact(client, auth, {"registry": change})).json())["flips"]
    [flip] = [f for f in flips if f["recipient_id"] == rid]
    assert flip["count"] == 13
