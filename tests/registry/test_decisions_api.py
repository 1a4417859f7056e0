"""`POST /v1/decisions`: idempotent ingest of blocked flows and ledger counts, bounded gzip bodies."""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import random
import uuid
from datetime import UTC, datetime

import orjson
import pytest
import sqlalchemy as sa

from registry.models import BlockedFlow, DecisionFact, FlowReason, LedgerEntry

URL = "/v1/decisions"


def record(**over) -> dict:
    """A spooled decision record as the proxy writes it."""
    base = {
        "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "decision_id": uuid.uuid4().hex,
        "action": "deny",
        "would_block": False,
        "mode": "enforce",
        "reason_codes": ["MOBILE_INFO_FOR_MARKETING"],
        "recipient_id": "twilio",
        "host": "api.twilio.com",
        "port": 443,
        "method": "POST",
        "path": "/2010-04-01/Accounts/AC1/Messages.json",
        "purpose": "marketing",
        "categories": ["contact.phone_number"],
        "finding_locations": ["contact.phone_number@form:To"],
        "source_workload": "sms-gateway",
        "source_namespace": "messaging",
        "status": 403,
        "latency_ms": 1.2,
        "reasons": [{"code": "MOBILE_INFO_FOR_MARKETING", "message": "…"}],
        "findings": [
            {"category": "contact.phone_number", "location": "form:To", "detector": "phone"}
        ],
    }
    return {**base, **over}


def gz(doc: dict) -> bytes:
    return gzip.compress(orjson.dumps(doc))


async def post(client, auth, doc: dict, *, role: str = "proxy"):
    headers = {**auth(role), "Content-Type": "application/json", "Content-Encoding": "gzip"}
    return await client.post(URL, data=gz(doc), headers=headers)


async def scalars(sessions, stmt) -> list:
    """Run a Core select on a fresh session and return its first column."""
    async with sessions() as session:
        conn = await session.connection()
        return list((await conn.execute(stmt)).scalars().all())


async def test_sending_a_batch_twice_stores_each_decision_once(client, auth, sessions):
    records = [record() for _ in range(5)]
    first = await post(client, auth, {"proxy_id": "p1", "decisions": records})
    assert first.status == 200
    assert await first.json() == {"accepted": 5, "duplicates": 0, "ledger": 0, "rejected": []}
    second = await post(client, auth, {"proxy_id": "p1", "decisions": [*records, record()]})
    assert (await second.json())["accepted"] == 1
    assert (await second.json())["duplicates"] == 5
    ids = [r["decision_id"] for r in records]
    stored = await scalars(
        sessions, sa.select(sa.func.count()).where(BlockedFlow.decision_id.in_(ids))
    )
    reasons = await scalars(
        sessions, sa.select(sa.func.count()).where(FlowReason.decision_id.in_(ids))
    )
    assert stored == [5]
    assert reasons == [5]  # one reason each, not doubled by the re-send


async def test_plain_json_body_is_accepted_too(client, auth):
    resp = await client.post(
        URL, json={"proxy_id": "p1", "decisions": [record()]}, headers=auth("proxy")
    )
    assert resp.status == 200
    assert (await resp.json())["accepted"] == 1


async def test_gzip_body_without_content_encoding_is_inflated(client, auth):
    resp = await client.post(
        URL,
        data=gz({"proxy_id": "p1", "decisions": [record()]}),
        headers={**auth("proxy"), "Content-Type": "application/gzip"},
    )
    assert resp.status == 200
    assert (await resp.json())["accepted"] == 1


async def test_ledger_resend_replaces_the_count(client, auth, sessions):
    workload = f"billing-{uuid.uuid4().hex[:6]}"
    row = {
        "minute": "2026-11-28T10:15:00Z",
        "source_workload": workload,
        "source_namespace": "finance",
        "recipient_id": "stripe",
        "purpose": "billing",
        "category": "payment.account_number",
        "count": 7,
    }
    for count in (7, 9):
        resp = await post(client, auth, {"proxy_id": "p1", "ledger": [{**row, "count": count}]})
        assert resp.status == 200
        assert (await resp.json())["ledger"] == 1
    counts = await scalars(
        sessions, sa.select(LedgerEntry.count).where(LedgerEntry.source_workload == workload)
    )
    assert counts == [9]


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        pytest.param({"reason_codes": ["NOT_A_CODE"]}, "reason_codes", id="unknown reason code"),
        pytest.param({"categories": ["contact.shoe_size"]}, "categories", id="unknown category"),
        pytest.param({"action": "maybe"}, "action", id="unknown action"),
        pytest.param({"decision_id": "x'; DROP TABLE blocked_flow;--"}, "decision_id", id="bad id"),
        pytest.param({"time": "yesterday"}, "time", id="bad time"),
        pytest.param({"status": 999}, "status", id="not an HTTP status"),
        pytest.param({"fault": "Engine Down!"}, "fault", id="not a fault code"),
        pytest.param(
            {"reasons": [{"code": "CATEGORY_NOT_APPROVED", "category": "contact.shoe_size"}]},
            "categories",
            id="unknown reason category",
        ),
        pytest.param({"reasons": [{"message": "no code"}]}, "reasons.0", id="reason without code"),
    ],
)
async def test_a_bad_record_is_rejected_alone(client, auth, bad, field):
    good = record()
    resp = await post(client, auth, {"proxy_id": "p1", "decisions": [good, record(**bad)]})
    assert resp.status == 200
    body = await resp.json()
    assert body["accepted"] == 1
    assert [(r["index"], r["field"]) for r in body["rejected"]] == [(1, field)]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        pytest.param(b"{not json", 400, id="malformed JSON"),
        pytest.param(b"\x1f\x8b\x08\x00garbage", 400, id="corrupt gzip"),
        pytest.param(
            orjson.dumps({"proxy_id": "p1", "extra": 1}), 422, id="unknown envelope field"
        ),
        pytest.param(orjson.dumps({"decisions": []}), 422, id="no proxy id"),
        pytest.param(orjson.dumps([1, 2]), 422, id="not an object"),
    ],
)
async def test_malformed_envelopes_are_refused(client, auth, body, status):
    resp = await client.post(
        URL, data=body, headers={**auth("proxy"), "Content-Type": "application/json"}
    )
    assert resp.status == status
    assert resp.content_type == "application/problem+json"


@pytest.fixture
def settings(settings):
    # A small decompression bound keeps the bomb test quick; the mechanism is the same.
    return dataclasses.replace(settings, max_decompressed_bytes=256 * 1024)


@pytest.mark.parametrize(
    "encoded_header",
    [pytest.param(True, id="Content-Encoding gzip"), pytest.param(False, id="bare gzip")],
)
async def test_gzip_bomb_is_413(client, auth, encoded_header):
    bomb = gzip.compress(b"[" + b" " * (8 * 1024 * 1024) + b"]")
    assert len(bomb) < 64 * 1024
    headers = {**auth("proxy"), "Content-Type": "application/json"}
    if encoded_header:
        headers["Content-Encoding"] = "gzip"
    resp = await client.post(URL, data=bomb, headers=headers)
    assert resp.status == 413


@pytest.mark.parametrize("role", ["engineer", "security", "admin"])
async def test_only_proxies_ship_decisions(client, auth, role):
    resp = await post(client, auth, {"proxy_id": "p1", "decisions": [record()]}, role=role)
    assert resp.status == 403


async def test_proxies_shipping_the_same_facts_at_once_all_land(client, auth, sessions):
    """Several proxies count the same facts into the same hours concurrently, each in its
    own order: every batch is stored (no 503 from two upserts locking rows in opposite
    orders) and each hour holds the sum of what all proxies counted."""
    minute = datetime.now(UTC).replace(second=0, microsecond=0).isoformat()
    facts = [
        {
            "kind": "fact",
            "minute": minute,
            "host": f"api{i}.racing.example",
            "port": 443,
            "recipient_id": "racing",
            "purpose": "billing",
            "categories": ["contact.email"],
            "verdict": "allow",
            "count": 1,
        }
        for i in range(30)
    ]

    async def ship(proxy: int, round_: int) -> int:
        rows = random.Random(proxy * 100 + round_).sample(facts, len(facts))
        doc = {"proxy_id": f"racing-{proxy}-{round_}", "decisions": [], "ledger": rows}
        resp = await post(client, auth, doc)
        return resp.status

    statuses = await asyncio.gather(*(ship(p, r) for r in range(4) for p in range(4)))
    assert statuses == [200] * 16
    table = DecisionFact.__table__
    counts = await scalars(
        sessions, sa.select(table.c.count).where(table.c.recipient_id == "racing")
    )
    assert sorted(counts) == [16] * 30
