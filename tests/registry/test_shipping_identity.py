"""The shipping identity is the token's rotation lineage: no proxy token can forge, shadow
or block another proxy's records, and a rotated token re-sends exactly once.

Proxy tokens ship through the real API into the real database: a proxy id is bound to the
identity that first shipped as it (another is 403 `proxy-id-bound`); a decision id shipped by
two identities is two flows, each with its `shipped_by`; a rotated token ships as its
predecessor, so a minute re-sent after a rotation replaces its counts instead of adding.
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


async def ship_status(client, headers: dict[str, str], doc: dict) -> tuple[int, dict]:
    resp = await client.post(
        "/v1/decisions",
        data=gzip.compress(orjson.dumps(doc)),
        headers={**headers, "Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    return resp.status, await resp.json()


async def test_a_proxy_id_belongs_to_the_identity_that_first_shipped_as_it(
    client, auth, intruder, unique
):
    name, other = intruder
    rid, pod = unique("twilio"), unique("pod")
    first = await ship(client, auth("proxy"), {"proxy_id": pod, "ledger": [ledger_row(rid, 7)]})
    assert (first["ledger"], first["rejected"]) == (1, [])
    # Another token naming the same proxy id cannot add (or replace) counts under it.
    status, problem = await ship_status(
        client, other, {"proxy_id": pod, "ledger": [ledger_row(rid, 5)], "decisions": [record()]}
    )
    assert status == 403
    assert problem["type"] == "https://sharewall.dev/problems/proxy-id-bound"
    assert problem["proxy_ids"] == [pod]
    assert (await ledger(client, auth, rid))["total"] == 7
    # Under its own proxy id it ships what it likes, stored as its own.
    mine = unique("pod")
    await ship(client, other, {"proxy_id": mine, "ledger": [ledger_row(rid, 5)]})
    await ship(client, auth("proxy"), {"proxy_id": pod, "ledger": [ledger_row(rid, 7)]})
    by_shipper = await ledger(client, auth, rid, group_by="shipper")
    shippers = {
        (g["shipper"]["token_name"], g["shipper"]["proxy_id"]): g["count"]
        for g in by_shipper["groups"]
    }
    assert shippers == {("proxy-sidecar", pod): 7, (name, mine): 5}
    # The bindings are shown; an admin's release lets the next shipper bind the id.
    listed = await client.get("/v1/proxy-ids", headers=auth("security"))
    bound = {b["proxy_id"]: b["shipped_by"]["token_name"] for b in (await listed.json())["items"]}
    assert (bound[pod], bound[mine]) == ("proxy-sidecar", name)
    assert (await client.delete(f"/v1/proxy-ids/{pod}", headers=auth("security"))).status == 403
    assert (await client.delete(f"/v1/proxy-ids/{pod}", headers=auth("admin"))).status == 204
    assert (await client.delete(f"/v1/proxy-ids/{pod}", headers=auth("admin"))).status == 404
    await ship(client, other, {"proxy_id": pod, "ledger": []})
    status, _ = await ship_status(client, auth("proxy"), {"proxy_id": pod, "ledger": []})
    assert status == 403


async def test_another_tokens_facts_do_not_suppress_a_proxys_facts(
    client, auth, intruder, unique, sessions
):
    _, other = intruder
    rid, pod = unique("twilio"), unique("pod")
    real = {"proxy_id": pod, "ledger": [fact_row(rid, 5)]}
    assert (await ship(client, auth("proxy"), real))["rejected"] == []
    # The other token cannot mark (or count) the proxy's minute under its proxy id ...
    status, _ = await ship_status(client, other, {"proxy_id": pod, "ledger": [fact_row(rid, 1)]})
    assert status == 403
    # ... and its own proxy id's facts are its own: they suppress nothing.
    await ship(client, other, {"proxy_id": unique("pod"), "ledger": [fact_row(rid, 1)]})
    await ship(client, auth("proxy"), real)  # a re-send is counted once
    async with sessions() as session:
        conn = await session.connection()
        counted = await conn.execute(
            sa.select(sa.func.sum(DecisionFact.count)).where(DecisionFact.recipient_id == rid)
        )
    assert counted.scalar_one() == 6


async def test_a_decision_id_shipped_by_two_proxies_is_two_flows(
    client, auth, intruder, unique, sessions
):
    name, other = intruder
    original = record()
    decision_id = original["decision_id"]
    # The other proxy learnt the id and ships it first: before, the real record was refused.
    forged = {**record(host="api.elsewhere.example"), "decision_id": decision_id}
    answer = await ship(client, other, {"proxy_id": unique("pod"), "decisions": [forged]})
    assert (answer["accepted"], answer["rejected"]) == (1, [])
    first = await ship(client, auth("proxy"), {"proxy_id": unique("pod"), "decisions": [original]})
    assert (first["accepted"], first["duplicates"], first["rejected"]) == (1, 0, [])
    # Each re-send is the idempotent re-send it always was.
    again = await ship(client, auth("proxy"), {"proxy_id": unique("pod"), "decisions": [original]})
    assert (again["accepted"], again["duplicates"], again["rejected"]) == (0, 1, [])
    async with sessions() as session:
        conn = await session.connection()
        stored = await conn.execute(
            sa.select(sa.func.count()).where(BlockedFlow.decision_id == decision_id)
        )
    assert stored.scalar_one() == 2

    # A reviewer looking the id up sees two records, each naming its shipper.
    listed = await client.get(
        "/v1/flows", params={"decision_id": decision_id}, headers=auth("security")
    )
    flows = (await listed.json())["flows"]
    hosts = {f["shipped_by"]["token_name"]: f["host"] for f in flows}
    assert hosts == {"proxy-sidecar": original["host"], name: "api.elsewhere.example"}
    one = await client.get(f"/v1/flows/{decision_id}", headers=auth("security"))
    assert one.status == 409
    problem = await one.json()
    assert problem["type"] == "https://sharewall.dev/problems/ambiguous-flow"
    assert {s["token_name"] for s in problem["shipped_by"]} == {"proxy-sidecar", name}
    real_id = next(f["shipped_by"]["token_id"] for f in flows if f["host"] == original["host"])
    one = await client.get(
        f"/v1/flows/{decision_id}", params={"shipped_by": real_id}, headers=auth("security")
    )
    assert one.status == 200
    assert (await one.json())["host"] == original["host"]
    triage = await client.post(
        f"/v1/flows/{decision_id}/triage", json={"state": "acknowledged"}, headers=auth("security")
    )
    assert triage.status == 409
    triage = await client.post(
        f"/v1/flows/{decision_id}/triage",
        params={"shipped_by": real_id},
        json={"state": "acknowledged"},
        headers=auth("security"),
    )
    assert triage.status == 200
    assert (await triage.json())["shipped_by"]["token_id"] == real_id


async def test_an_opa_log_event_with_another_proxys_decision_id_is_its_own_flow(
    client, auth, intruder
):
    _, other = intruder
    original = record(time=datetime.now(UTC).isoformat())
    await ship(client, auth("proxy"), {"proxy_id": "pod-opa", "decisions": [original]})
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
    assert (answer["accepted"], answer["duplicates"]) == (1, 0)
    listed = await client.get(
        "/v1/flows", params={"decision_id": original["decision_id"]}, headers=auth("security")
    )
    hosts = sorted(f["host"] for f in (await listed.json())["flows"])
    assert hosts == sorted([original["host"], "x.example"])


async def test_a_rotated_token_resends_a_minute_once(client, auth, unique, sessions):
    """Rotation keeps the shipping identity: the new token (and the old one in its grace)
    re-sending what the old one shipped replaces counts, skips counted facts and stored flows,
    and keeps the proxy id."""
    name, rid, pod = unique("proxy-rot"), unique("twilio"), unique("pod")
    created = await client.post(
        "/v1/tokens", json={"name": name, "role": "proxy"}, headers=auth("admin")
    )
    old = await created.json()
    old_auth = {"Authorization": f"Bearer {old['secret']}"}
    flow = record()
    minute = {
        "proxy_id": pod,
        "decisions": [flow],
        "ledger": [ledger_row(rid, 7), fact_row(rid, 3)],
    }
    await ship(client, old_auth, minute)
    rotated = await client.post(f"/v1/tokens/{old['id']}/rotate", headers=auth("admin"))
    assert rotated.status == 201, await rotated.text()
    new = await rotated.json()
    assert (new["name"], new["role"], new["shipper_id"]) == (name, "proxy", old["id"])
    assert new["id"] != old["id"] and new["secret"] != old["secret"]
    # In its grace the old secret ships as the same identity: the two are one shipper.
    during = await ship(client, old_auth, minute)
    assert (during["accepted"], during["duplicates"]) == (0, 1)
    again = await ship(client, {"Authorization": f"Bearer {new['secret']}"}, minute)
    assert (again["accepted"], again["duplicates"]) == (0, 1)
    assert (await ledger(client, auth, rid))["total"] == 7
    async with sessions() as session:
        conn = await session.connection()
        counted = await conn.execute(
            sa.select(sa.func.sum(DecisionFact.count)).where(DecisionFact.recipient_id == rid)
        )
    assert counted.scalar_one() == 3
    shown = await (
        await client.get(f"/v1/flows/{flow['decision_id']}", headers=auth("security"))
    ).json()
    assert shown["shipped_by"] == {"token_id": old["id"], "token_name": name}
    gone = await client.post(f"/v1/tokens/{old['id']}/rotate", headers=auth("admin"))
    assert gone.status == 409
