"""The shipping token is the identity: a proxy token cannot forge another proxy's records.

Two proxy tokens ship through the real API into the real database. Whatever `proxy_id` a body
names, a token replaces only its own ledger counts, cannot mark another's facts as counted,
and cannot displace (or take over) a decision id another token shipped first. Re-sends by
the same token stay exactly-once.
"""

from __future__ import annotations

import gzip
import uuid
from datetime import UTC, datetime

import orjson
import pytest
import sqlalchemy as sa

from registry.models import BlockedFlow, DecisionFact

from .test_decisions_api import record

MINUTE = "2026-11-21T10:07:00Z"


@pytest.fixture
async def intruder(client, auth, unique) -> tuple[str, dict[str, str]]:
    """A second proxy token (another pod's): its name and Authorization header."""
    name = unique("proxy-other")
    resp = await client.post(
        "/v1/tokens", json={"name": name, "role": "proxy"}, headers=auth("admin")
    )
    assert resp.status == 201
    return name, {"Authorization": f"Bearer {(await resp.json())['secret']}"}


async def ship(client, headers: dict[str, str], doc: dict) -> dict:
    resp = await client.post(
        "/v1/decisions",
        data=gzip.compress(orjson.dumps(doc)),
        headers={**headers, "Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert resp.status == 200, await resp.text()
    return await resp.json()


def ledger_row(recipient: str, count: int) -> dict:
    return {
        "minute": MINUTE,
        "source_workload": "sms-gateway",
        "source_namespace": "messaging",
        "recipient_id": recipient,
        "purpose": "service_delivery",
        "category": "contact.phone_number",
        "count": count,
    }


def fact_row(recipient: str, count: int) -> dict:
    return {
        "kind": "fact",
        "minute": MINUTE,
        "source_workload": "sms-gateway",
        "source_namespace": "messaging",
        "host": "api.twilio.com",
        "port": 443,
        "recipient_id": recipient,
        "purpose": "service_delivery",
        "categories": ["contact.phone_number"],
        "verdict": "allow",
        "count": count,
    }


async def ledger(client, auth, recipient: str, group_by: str | None = None) -> dict:
    query = {"recipient_id": recipient, **({"group_by": group_by} if group_by else {})}
    resp = await client.get("/v1/ledger", params=query, headers=auth("security"))
    assert resp.status == 200
    return await resp.json()


async def test_another_token_cannot_replace_a_proxys_ledger_counts(client, auth, intruder, unique):
    name, other = intruder
    rid = unique("twilio")
    first = await ship(client, auth("proxy"), {"proxy_id": "pod-a", "ledger": [ledger_row(rid, 7)]})
    assert (first["ledger"], first["rejected"]) == (1, [])
    # Another token names the same proxy and key with a count of 0: before, this replaced 7.
    forged = await ship(client, other, {"proxy_id": "pod-a", "ledger": [ledger_row(rid, 0)]})
    assert (forged["ledger"], forged["rejected"]) == (1, [])
    assert (await ledger(client, auth, rid))["total"] == 7
    # The same token re-sending its row replaces its own count: still 7, not 14.
    await ship(client, auth("proxy"), {"proxy_id": "pod-a", "ledger": [ledger_row(rid, 7)]})
    assert (await ledger(client, auth, rid))["total"] == 7
    by_shipper = await ledger(client, auth, rid, group_by="shipper")
    shippers = {
        (g["shipper"]["token_name"], g["shipper"]["proxy_id"]): g["count"]
        for g in by_shipper["groups"]
    }
    assert shippers == {("proxy-sidecar", "pod-a"): 7, (name, "pod-a"): 0}


async def test_another_tokens_facts_do_not_suppress_a_proxys_facts(
    client, auth, intruder, unique, sessions
):
    _, other = intruder
    rid = unique("twilio")
    # The other token ships the proxy's minute first (before, the real one was then skipped).
    await ship(client, other, {"proxy_id": "pod-a", "ledger": [fact_row(rid, 1)]})
    real = {"proxy_id": "pod-a", "ledger": [fact_row(rid, 5)]}
    assert (await ship(client, auth("proxy"), real))["rejected"] == []
    await ship(client, auth("proxy"), real)  # a re-send is counted once
    async with sessions() as session:
        conn = await session.connection()
        counted = await conn.execute(
            sa.select(sa.func.sum(DecisionFact.count)).where(DecisionFact.recipient_id == rid)
        )
    assert counted.scalar_one() == 6


async def test_a_decision_id_stays_with_the_token_that_shipped_it_first(
    client, auth, intruder, sessions
):
    name, other = intruder
    original = record()
    decision_id = original["decision_id"]
    first = await ship(client, auth("proxy"), {"proxy_id": "pod-a", "decisions": [original]})
    assert (first["accepted"], first["rejected"]) == (1, [])

    forged = {**record(host="api.elsewhere.example"), "decision_id": decision_id}
    answer = await ship(client, other, {"proxy_id": "pod-a", "decisions": [forged, record()]})
    assert answer["accepted"] == 1  # its own, new record is stored
    assert answer["duplicates"] == 0  # a conflict is not passed off as a re-send
    assert [(r["decision_id"], r["field"]) for r in answer["rejected"]] == [
        (decision_id, "decision_id")
    ]
    assert "another token" in answer["rejected"][0]["message"]

    # The same token re-sending is the idempotent re-send it always was.
    again = await ship(client, auth("proxy"), {"proxy_id": "pod-a", "decisions": [original]})
    assert (again["accepted"], again["duplicates"], again["rejected"]) == (0, 1, [])

    resp = await client.get(f"/v1/flows/{decision_id}", headers=auth("security"))
    flow = await resp.json()
    assert flow["host"] == original["host"]
    assert flow["shipped_by"]["token_name"] == "proxy-sidecar"
    async with sessions() as session:
        conn = await session.connection()
        stored = await conn.execute(
            sa.select(sa.func.count()).where(BlockedFlow.decision_id == decision_id)
        )
    assert stored.scalar_one() == 1

    listed = await client.get(
        "/v1/flows", params={"source": "sms-gateway", "limit": "200"}, headers=auth("security")
    )
    names = {
        f["decision_id"]: f["shipped_by"]["token_name"] for f in (await listed.json())["flows"]
    }
    assert names[decision_id] == "proxy-sidecar"
    assert name in names.values()  # the other token's own record names it


async def test_an_opa_log_event_cannot_take_another_tokens_decision_id(client, auth, intruder):
    _, other = intruder
    original = record(time=datetime.now(UTC).isoformat())
    await ship(client, auth("proxy"), {"proxy_id": "pod-a", "decisions": [original]})
    event = {
        "decision_id": original["decision_id"],
        "path": "sharewall/egress/decision",
        "timestamp": datetime.now(UTC).isoformat(),
        "input": {"request": {"host": "x.example", "method": "GET", "path": "/"}},
        "result": {"allow": False, "reasons": []},
        "labels": {"id": uuid.uuid4().hex},
    }
    resp = await client.post(
        "/v1/logs",
        data=gzip.compress(orjson.dumps([event])),
        headers={**other, "Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    answer = await resp.json()
    assert (answer["accepted"], answer["duplicates"], answer["conflicts"]) == (0, 0, 1)
    flow = await (
        await client.get(f"/v1/flows/{original['decision_id']}", headers=auth("security"))
    ).json()
    assert flow["host"] == original["host"]
