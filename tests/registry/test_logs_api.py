"""`POST /v1/logs`: OPA decision-log uploads; denials become flows, idempotent by decision id."""

from __future__ import annotations

import gzip
import uuid

import orjson
import pytest


def event(allow: bool, *, path: str = "sharewall/egress/decision", **over) -> dict:
    """An OPA decision-log event for the egress decision."""
    reasons = [] if allow else [{"code": "UNKNOWN_RECIPIENT", "message": "…"}]
    base = {
        "labels": {"id": "opa-sidecar-1", "version": "1.0.0"},
        "decision_id": str(uuid.uuid4()),
        "path": path,
        "input": {
            "request": {"method": "POST", "host": "api.nowhere.example", "path": "/x"},
            "source": {"workload": "sms-gateway", "namespace": "messaging"},
            "purpose": "service_delivery",
            "recipient_id": None,
            "categories": ["contact.phone_number"],
            "findings": [
                {"category": "contact.phone_number", "location": "form:To", "detector": "phone"}
            ],
        },
        "result": {"allow": allow, "action": "allow" if allow else "deny", "reasons": reasons},
        "timestamp": "2026-11-22T08:00:00.123456789Z",
    }
    return {**base, **over}


async def upload(client, auth, events, role: str = "proxy"):
    return await client.post(
        "/v1/logs",
        data=gzip.compress(orjson.dumps(events)),
        headers={**auth(role), "Content-Encoding": "gzip", "Content-Type": "application/json"},
    )


async def test_denials_become_flows_and_allows_are_counted(client, auth):
    denied = event(False)
    other_query = event(True, path="system/health")
    resp = await upload(client, auth, [denied, event(True), event(True), other_query])
    assert resp.status == 200
    assert await resp.json() == {
        "accepted": 1,
        "duplicates": 0,
        "allowed": 2,
        "ignored": 1,
    }
    flow = await client.get(f"/v1/flows/{denied['decision_id']}", headers=auth("security"))
    assert flow.status == 200
    body = await flow.json()
    assert [r["code"] for r in body["reasons"]] == ["UNKNOWN_RECIPIENT"]
    assert body["host"] == "api.nowhere.example"
    assert body["source"] == {"workload": "sms-gateway", "namespace": "messaging"}
    assert body["proxy_id"] == "opa:opa-sidecar-1"
    assert body["time"].startswith("2026-11-22T08:00:00")


async def test_reupload_is_idempotent(client, auth):
    events = [event(False), event(False)]
    assert (await (await upload(client, auth, events)).json())["accepted"] == 2
    again = await (await upload(client, auth, events)).json()
    assert (again["accepted"], again["duplicates"]) == (0, 2)


async def test_package_level_query_result_is_understood(client, auth):
    denied = event(False, path="sharewall/egress")
    denied["result"] = {"decision": denied["result"]}
    assert (await (await upload(client, auth, [denied])).json())["accepted"] == 1


@pytest.mark.parametrize(
    ("body", "status"),
    [
        pytest.param(orjson.dumps({"not": "a list"}), 422, id="not an array"),
        pytest.param(b"[{", 400, id="malformed JSON"),
    ],
)
async def test_malformed_uploads(client, auth, body, status):
    resp = await client.post(
        "/v1/logs", data=gzip.compress(body), headers={**auth("proxy"), "Content-Encoding": "gzip"}
    )
    assert resp.status == status


@pytest.mark.parametrize(
    ("role", "status"), [("proxy", 200), ("admin", 403), ("security", 403), ("engineer", 403)]
)
async def test_log_upload_roles(client, auth, role, status):
    assert (await upload(client, auth, [], role=role)).status == status
