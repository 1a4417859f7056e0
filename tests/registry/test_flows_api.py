"""`/v1/flows`: filters, cursor pagination, one flow, triage (security only, audited)."""

from __future__ import annotations

import gzip
import uuid
from datetime import UTC, datetime, timedelta

import orjson
import pytest
import sqlalchemy as sa

from registry.models import AuditEvent

T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def flow(recipient: str, minutes: int, **over) -> dict:
    """A blocked decision record at T0 + `minutes`."""
    base = {
        "time": (T0 + timedelta(minutes=minutes)).isoformat(),
        "decision_id": uuid.uuid4().hex,
        "action": "deny",
        "mode": "enforce",
        "reason_codes": ["CATEGORY_NOT_APPROVED"],
        "recipient_id": recipient,
        "host": f"api.{recipient}.example",
        "method": "POST",
        "path": "/send",
        "purpose": "service_delivery",
        "categories": ["contact.email"],
        "source_workload": "sms-gateway",
        "source_namespace": "messaging",
        "findings": [{"category": "contact.email", "location": "json:$.to", "detector": "email"}],
    }
    return {**base, **over}


async def ship(client, auth, records: list[dict]) -> None:
    resp = await client.post(
        "/v1/decisions",
        data=gzip.compress(orjson.dumps({"proxy_id": "p-test", "decisions": records})),
        headers={**auth("proxy"), "Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    assert resp.status == 200
    assert (await resp.json())["rejected"] == []


async def list_ids(client, auth, query: str, role: str = "security") -> list[str]:
    resp = await client.get(f"/v1/flows?{query}", headers=auth(role))
    assert resp.status == 200, await resp.text()
    return [f["decision_id"] for f in (await resp.json())["flows"]]


@pytest.fixture
async def seeded(client, auth, unique):
    """Six flows of one fresh recipient with distinct reasons, categories, sources and times."""
    rid = unique("acme")
    records = [
        flow(rid, 0),
        flow(
            rid, 1, reason_codes=["MOBILE_INFO_FOR_MARKETING"], categories=["contact.phone_number"]
        ),
        flow(rid, 2, source_workload="billing"),
        flow(rid, 3, reason_codes=["SMS_CONSENT_TO_THIRD_PARTY", "CATEGORY_NOT_APPROVED"]),
        flow(rid, 4, categories=["contact.email", "mobile.carrier"]),
        flow(rid, 5, action="allow", would_block=True, mode="report"),
    ]
    await ship(client, auth, records)
    return rid, [r["decision_id"] for r in records]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        pytest.param("", [5, 4, 3, 2, 1, 0], id="all, newest first"),
        pytest.param("reason=CATEGORY_NOT_APPROVED", [5, 4, 3, 2, 0], id="by reason"),
        pytest.param("reason=SMS_CONSENT_TO_THIRD_PARTY", [3], id="by second reason"),
        pytest.param("category=contact.phone_number", [1], id="by category"),
        pytest.param("category=mobile.carrier&reason=CATEGORY_NOT_APPROVED", [4], id="both"),
        pytest.param("source=billing", [2], id="by source workload"),
        pytest.param("since=2026-11-20T12:02:00Z&until=2026-11-20T12:04:00Z", [3, 2], id="range"),
        pytest.param("since=2026-11-20T12:02:00%2B00:00", [5, 4, 3, 2], id="since with offset"),
        pytest.param("triage_state=acknowledged", [], id="by triage state"),
    ],
)
async def test_flow_filters(client, auth, seeded, query, expected):
    rid, ids = seeded
    got = await list_ids(client, auth, f"recipient_id={rid}&{query}")
    assert got == [ids[i] for i in expected]


async def test_cursor_pages_cover_every_flow_once(client, auth, seeded):
    rid, ids = seeded
    seen: list[str] = []
    url = f"/v1/flows?recipient_id={rid}&limit=4"
    for reason_filter in ("", "&reason=CATEGORY_NOT_APPROVED"):
        seen = []
        cursor = None
        while True:
            resp = await client.get(
                url + reason_filter + (f"&cursor={cursor}" if cursor else ""),
                headers=auth("engineer"),
            )
            page = await resp.json()
            seen += [f["decision_id"] for f in page["flows"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        expected = ids if not reason_filter else [i for n, i in enumerate(ids) if n != 1]
        assert sorted(seen) == sorted(expected)
        assert len(seen) == len(set(seen))


@pytest.mark.parametrize(
    ("query", "field"),
    [
        pytest.param("reason=NOT_A_REASON", "reason", id="unknown reason code"),
        pytest.param("category=contact.shoe_size", "category", id="unknown category"),
        pytest.param("triage_state=ignored", "triage_state", id="unknown triage state"),
        pytest.param("since=last-tuesday", "since", id="bad time"),
        pytest.param("cursor=bm9wZQ", "cursor", id="forged cursor"),
        pytest.param("limit=0", "limit", id="limit too small"),
    ],
)
async def test_bad_filters_are_422_naming_the_parameter(client, auth, query, field):
    resp = await client.get(f"/v1/flows?{query}", headers=auth("security"))
    assert resp.status == 422
    assert (await resp.json())["errors"][0]["field"] == field


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("x' OR '1'='1", id="quote injection"),
        pytest.param("%'; DROP TABLE blocked_flow; --", id="statement injection"),
        pytest.param("%", id="like wildcard"),
    ],
)
async def test_sql_metacharacters_in_filters_are_plain_values(client, auth, seeded, value):
    assert await list_ids(client, auth, f"recipient_id={value}") == []
    assert await list_ids(client, auth, f"source={value}") == []
    rid, ids = seeded
    assert len(await list_ids(client, auth, f"recipient_id={rid}")) == len(ids)


async def test_one_flow_shows_reasons_with_messages_and_findings_without_values(
    client, auth, seeded
):
    _, ids = seeded
    resp = await client.get(f"/v1/flows/{ids[1]}", headers=auth("engineer"))
    assert resp.status == 200
    body = await resp.json()
    assert body["reasons"][0]["code"] == "MOBILE_INFO_FOR_MARKETING"
    assert body["reasons"][0]["message"]
    assert body["findings"] == [
        {"category": "contact.email", "location": "json:$.to", "detector": "email"}
    ]
    assert body["triage"]["state"] == "new"
    missing = await client.get("/v1/flows/does-not-exist", headers=auth("engineer"))
    assert missing.status == 404


async def test_security_triages_with_an_audit_event(client, auth, seeded, sessions):
    rid, ids = seeded
    resp = await client.post(
        f"/v1/flows/{ids[0]}/triage",
        json={"state": "false_positive", "note": "test number, not a person"},
        headers=auth("security"),
    )
    assert resp.status == 200
    body = await resp.json()
    assert body["triage"]["state"] == "false_positive"
    assert body["triage"]["by"] == "sec-carol"
    assert await list_ids(client, auth, f"recipient_id={rid}&triage_state=false_positive") == [
        ids[0]
    ]
    async with sessions() as session:
        conn = await session.connection()
        events = (
            await conn.execute(
                sa.select(AuditEvent.__table__).where(
                    AuditEvent.entity_type == "flow", AuditEvent.entity_id == ids[0]
                )
            )
        ).all()
    assert len(events) == 1
    assert events[0].action == "flow.triage"
    assert events[0].actor == "sec-carol"
    assert events[0].before["state"] == "new"
    assert events[0].after["state"] == "false_positive"


async def test_triage_carries_the_flows_etag_and_honours_if_match(client, auth, seeded):
    """Triage is a reviewer's write like the others: ETag = the flow's version, If-Match
    optional, a stale or weak tag is 412 and changes nothing."""
    _, ids = seeded
    url = f"/v1/flows/{ids[2]}"
    read = await client.get(url, headers=auth("security"))
    etag = read.headers["ETag"]
    assert etag == f'"{(await read.json())["version"]}"'
    triage = f"{url}/triage"
    done = await client.post(
        triage,
        json={"state": "acknowledged"},
        headers={**auth("security"), "If-Match": etag},
    )
    assert done.status == 200
    fresh = done.headers["ETag"]
    assert fresh != etag and fresh == f'"{(await done.json())["version"]}"'
    for stale in (etag, f"W/{fresh}"):
        refused = await client.post(
            triage,
            json={"state": "escalated"},
            headers={**auth("security"), "If-Match": stale},
        )
        assert refused.status == 412, stale
        assert (await refused.json())["type"] == "https://sharewall.dev/problems/version-mismatch"
    assert (await (await client.get(url, headers=auth("security"))).json())["triage"][
        "state"
    ] == "acknowledged"
    bad = await client.post(
        triage, json={"state": "escalated"}, headers={**auth("security"), "If-Match": "2"}
    )
    assert bad.status == 400
    listed = await client.post(
        triage,
        json={"state": "escalated"},
        headers={**auth("security"), "If-Match": f'"999", {fresh}'},
    )
    assert listed.status == 200
    unconditional = await client.post(triage, json={"state": "new"}, headers=auth("security"))
    assert unconditional.status == 200
    doc = await (await client.get("/openapi.json")).json()
    op = doc["paths"]["/v1/flows/{decision_id}/triage"]["post"]
    assert {"400", "409", "412"} <= set(op["responses"])
    assert "ETag" in op["responses"]["200"]["headers"]


@pytest.mark.parametrize(
    ("role", "body", "status"),
    [
        pytest.param("engineer", {"state": "acknowledged"}, 403, id="engineer may not triage"),
        pytest.param("proxy", {"state": "acknowledged"}, 403, id="proxy may not triage"),
        pytest.param("security", {"state": "ignored"}, 422, id="unknown state"),
        pytest.param("security", {"state": "new", "extra": 1}, 422, id="unknown field"),
    ],
)
async def test_triage_refusals(client, auth, seeded, role, body, status):
    _, ids = seeded
    resp = await client.post(f"/v1/flows/{ids[0]}/triage", json=body, headers=auth(role))
    assert resp.status == status


@pytest.mark.parametrize(("role", "status"), [("proxy", 403), ("admin", 403), (None, 401)])
async def test_flow_reads_are_for_security_and_engineers(client, auth, role, status):
    resp = await client.get("/v1/flows", headers=auth(role) if role else {})
    assert resp.status == status


async def test_faults_are_stored_with_their_status_and_listed_apart_from_denials(
    client, auth, unique
):
    rid = unique("faulty")
    denial = flow(
        rid,
        1,
        status=403,
        reason_codes=["CATEGORY_NOT_APPROVED"],
        reasons=[{"code": "CATEGORY_NOT_APPROVED", "message": "…", "category": "contact.email"}],
    )
    fault = flow(
        rid, 2, status=503, fault="inspector_error", reason_codes=[], reasons=[], categories=[]
    )
    report = flow(rid, 3, action="allow", would_block=True, mode="report", status=200)
    await ship(client, auth, [denial, fault, report])

    resp = await client.get(f"/v1/flows/{fault['decision_id']}", headers=auth("security"))
    stored = await resp.json()
    assert (stored["kind"], stored["fault"], stored["status"]) == ("fault", "inspector_error", 503)
    assert stored["reasons"] == []
    resp = await client.get(f"/v1/flows/{denial['decision_id']}", headers=auth("security"))
    stored = await resp.json()
    assert (stored["kind"], stored["fault"], stored["status"]) == ("deny", None, 403)
    [reason] = stored["reasons"]
    assert reason["code"] == "CATEGORY_NOT_APPROVED" and reason["category"] == "contact.email"
    assert reason["message"]  # the taxonomy's sentence, not the proxy's copy

    by_kind = {
        kind: await list_ids(client, auth, f"recipient_id={rid}&kind={kind}")
        for kind in ("fault", "deny", "would_block")
    }
    assert by_kind == {
        "fault": [fault["decision_id"]],
        "deny": [denial["decision_id"]],
        "would_block": [report["decision_id"]],
    }
    resp = await client.get("/v1/flows?kind=oops", headers=auth("security"))
    assert resp.status == 422


async def test_personal_data_in_a_stored_path_is_replaced_by_its_category(client, auth, unique):
    # A record of a proxy that did not redact its path yet: the registry does it on ingest.
    rid = unique("leaky")
    record = flow(
        rid,
        4,
        path="/lookup/%2B6591234567?phone=%2B6591234567&country=SG&token=abc",
        categories=["contact.phone_number"],
        findings=[
            {"category": "contact.phone_number", "location": "query:phone", "detector": "phone"},
            {"category": "contact.phone_number", "location": "path:2", "detector": "phone"},
        ],
    )
    await ship(client, auth, [record])
    resp = await client.get(f"/v1/flows?recipient_id={rid}", headers=auth("security"))
    text = await resp.text()
    [stored] = (await resp.json())["flows"]
    assert stored["path"] == (
        "/lookup/[contact.phone_number]?phone=[contact.phone_number]&country=SG&token=REDACTED"
    )
    # ("token=abc", not "abc": a record's random hex decision id contains "abc" now and then.)
    assert "6591234567" not in text and "token=abc" not in text
