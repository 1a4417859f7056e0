"""`GET /v1/ledger`: grouped sums of the allowed counts proxies ship."""

from __future__ import annotations

import gzip

import orjson
import pytest


def row(recipient: str, minute: str, category: str, count: int, **over) -> dict:
    base = {
        "minute": f"2026-11-21T{minute}:00Z",
        "source_workload": "sms-gateway",
        "source_namespace": "messaging",
        "recipient_id": recipient,
        "purpose": "service_delivery",
        "category": category,
        "count": count,
    }
    return {**base, **over}


async def ship_ledger(client, auth, rows: list[dict], proxy_id: str = "p-ledger") -> None:
    resp = await client.post(
        "/v1/decisions",
        data=gzip.compress(orjson.dumps({"proxy_id": proxy_id, "ledger": rows})),
        headers={**auth("proxy"), "Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    assert resp.status == 200
    assert (await resp.json())["rejected"] == []


@pytest.fixture
async def seeded(client, auth, unique):
    rid = unique("twilio")
    await ship_ledger(
        client,
        auth,
        [
            row(rid, "10:00", "contact.phone_number", 5),
            row(rid, "10:01", "contact.phone_number", 7),
            row(rid, "10:01", "comms.content", 3),
            row(
                rid,
                "10:02",
                "contact.phone_number",
                2,
                source_workload="billing",
                purpose="billing",
            ),
        ],
    )
    # A second proxy's counts add up; a re-send of the first proxy's minute replaces.
    await ship_ledger(client, auth, [row(rid, "10:00", "contact.phone_number", 4)], "p-other")
    await ship_ledger(client, auth, [row(rid, "10:01", "comms.content", 3)])
    return rid


async def get(client, auth, query: str, role: str = "security"):
    resp = await client.get(f"/v1/ledger?{query}", headers=auth(role))
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def test_sums_per_recipient_purpose_category_and_source(client, auth, seeded):
    body = await get(client, auth, f"recipient_id={seeded}")
    groups = {
        (g["purpose"], g["category"], g["source"]["workload"]): g["count"] for g in body["groups"]
    }
    assert groups == {
        ("service_delivery", "contact.phone_number", "sms-gateway"): 16,
        ("service_delivery", "comms.content", "sms-gateway"): 3,
        ("billing", "contact.phone_number", "billing"): 2,
    }
    assert body["total"] == 21


@pytest.mark.parametrize(
    ("query", "total"),
    [
        pytest.param("group_by=recipient_id", 21, id="one group per recipient"),
        pytest.param("category=comms.content", 3, id="by category"),
        pytest.param("purpose=billing", 2, id="by purpose"),
        pytest.param("source=billing", 2, id="by source"),
        pytest.param("since=2026-11-21T10:01:00Z&until=2026-11-21T10:02:00Z", 10, id="range"),
    ],
)
async def test_ledger_filters(client, auth, seeded, query, total):
    body = await get(client, auth, f"recipient_id={seeded}&{query}", role="engineer")
    assert body["total"] == total


async def test_group_by_recipient_gives_one_row(client, auth, seeded):
    body = await get(client, auth, f"recipient_id={seeded}&group_by=recipient_id")
    assert [(g["recipient_id"], g["count"]) for g in body["groups"]] == [(seeded, 21)]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        pytest.param("purpose=spam", "purpose", id="unknown purpose"),
        pytest.param("category=contact.shoe_size", "category", id="unknown category"),
        pytest.param("group_by=colour", "group_by", id="unknown dimension"),
        pytest.param("until=soon", "until", id="bad time"),
    ],
)
async def test_bad_ledger_queries_are_422(client, auth, query, field):
    resp = await client.get(f"/v1/ledger?{query}", headers=auth("security"))
    assert resp.status == 422
    assert (await resp.json())["errors"][0]["field"] == field


@pytest.mark.parametrize(("role", "status"), [("proxy", 403), ("admin", 403), (None, 401)])
async def test_ledger_is_for_security_and_engineers(client, auth, role, status):
    resp = await client.get("/v1/ledger", headers=auth(role) if role else {})
    assert resp.status == status
