"""`GET /v1/datamap`: declared vs observed, as JSON, a record-of-processing CSV and Fides."""

from __future__ import annotations

import csv
import gzip
import io
import uuid
from datetime import UTC, datetime, timedelta

import orjson
import pytest


async def ship(client, auth, decisions=(), ledger=()) -> None:
    body = gzip.compress(
        orjson.dumps({"proxy_id": "p1", "decisions": list(decisions), "ledger": list(ledger)})
    )
    headers = {**auth("proxy"), "Content-Type": "application/json", "Content-Encoding": "gzip"}
    resp = await client.post("/v1/decisions", data=body, headers=headers)
    assert (await resp.json())["rejected"] == []


@pytest.fixture
async def mapped(client, auth, unique):
    """A recipient approved by a second person, with one used and one unused granted category,
    and a blocked attempt to send a category it was not granted."""
    rid = unique("zendesk")
    created = await client.post(
        "/v1/recipients",
        json={
            "id": rid,
            "name": "Zendesk Inc.",
            "kind": "vendor",
            "regions": ["SG", "US"],
            "hosts": [f"{rid}.example.com"],
            "grants": [
                {
                    "purpose": "customer_support",
                    "categories": ["contact.email", "contact.name"],
                    "legal_basis": "contract",
                    "expires": "2030-12-31",
                }
            ],
        },
        headers=auth("engineer"),
    )
    assert created.status == 201
    approved = await client.post(
        f"/v1/recipients/{rid}/approve",
        json={"note": "DPA ok"},
        headers={**auth("security"), "If-Match": created.headers["ETag"]},
    )
    assert approved.status == 200
    minute = (datetime.now(UTC) - timedelta(hours=2)).replace(second=0, microsecond=0)
    await ship(
        client,
        auth,
        decisions=[
            {
                "time": datetime.now(UTC).isoformat(),
                "decision_id": uuid.uuid4().hex,
                "action": "deny",
                "reason_codes": ["CATEGORY_NOT_APPROVED"],
                "recipient_id": rid,
                "purpose": "customer_support",
                "categories": ["contact.phone_number"],
            }
        ],
        ledger=[
            {
                "minute": minute.isoformat(),
                "recipient_id": rid,
                "purpose": "customer_support",
                "category": "contact.email",
                "count": 12,
            }
        ],
    )
    return rid


async def test_json_marks_unused_grants_and_ungranted_attempts(client, auth, mapped):
    resp = await client.get("/v1/datamap", headers=auth("security"))
    assert resp.status == 200
    doc = await resp.json()
    cells = {c["category"]: c for c in doc["cells"] if c["recipient_id"] == mapped}
    assert cells["contact.email"]["observed"] == 12 and not cells["contact.email"]["granted_unused"]
    assert cells["contact.name"]["granted"] and cells["contact.name"]["granted_unused"]
    phone = cells["contact.phone_number"]
    assert (phone["granted"], phone["blocked"], phone["attempted_not_granted"]) == (False, 1, True)
    [recipient] = [r for r in doc["recipients"] if r["id"] == mapped]
    assert recipient["grants"][0]["approved_by"] == "sec-carol"
    assert recipient["grants"][0]["approved_at"] is not None


async def test_csv_is_a_record_of_processing(client, auth, mapped):
    resp = await client.get("/v1/datamap?format=csv", headers=auth("engineer"))
    assert resp.status == 200
    assert resp.content_type == "text/csv"
    rows = list(csv.DictReader(io.StringIO(await resp.text())))
    [row] = [r for r in rows if r["recipient_id"] == mapped]
    assert row["kind"] == "vendor" and row["regions"] == "SG US"
    assert row["purpose"] == "customer_support"
    assert row["categories"] == "contact.email contact.name"
    assert row["legal_basis"] == "contract" and row["expires"] == "2030-12-31"
    assert row["approved_by"] == "sec-carol" and row["approved_at"]
    assert row["observed_calls_30d"] == "12"


async def test_fides_manifest_validates_with_fideslang(client, auth, mapped):
    from fideslang.default_taxonomy import DEFAULT_TAXONOMY
    from fideslang.models import System

    resp = await client.get("/v1/datamap?format=fides", headers=auth("security"))
    assert resp.status == 200
    manifest = await resp.json()
    systems = [System.model_validate(s) for s in manifest["system"]]
    [system] = [s for s in systems if s.fides_key == mapped]
    [declaration] = system.privacy_declarations
    assert sorted(declaration.data_categories) == ["user.contact.email", "user.name"]
    assert declaration.data_use == "essential.service.operations.support"
    assert declaration.legal_basis_for_processing.value == "Contract"
    assert declaration.third_parties == "Zendesk Inc."
    assert system.does_international_transfers  # US is outside SG/HK
    # Every key used exists in the Fides default taxonomy.
    known_categories = {c.fides_key for c in DEFAULT_TAXONOMY.data_category}
    known_uses = {u.fides_key for u in DEFAULT_TAXONOMY.data_use}
    for s in systems:
        for d in s.privacy_declarations:
            assert set(d.data_categories) <= known_categories
            assert d.data_use in known_uses


def test_every_taxonomy_category_and_purpose_maps_into_the_fides_taxonomy():
    from fideslang.default_taxonomy import DEFAULT_TAXONOMY

    from sharewall.taxonomy import load_taxonomy

    taxonomy = load_taxonomy()
    known_categories = {c.fides_key for c in DEFAULT_TAXONOMY.data_category}
    known_uses = {u.fides_key for u in DEFAULT_TAXONOMY.data_use}
    assert {taxonomy.fides_key(c) for c in taxonomy.categories} <= known_categories
    assert {taxonomy.fides_data_use(p) for p in taxonomy.purposes} <= known_uses


@pytest.mark.parametrize(
    ("query", "status"), [("format=xml", 422), ("days=0", 422), ("format=json&days=7", 200)]
)
async def test_datamap_query_validation(client, auth, query, status):
    resp = await client.get(f"/v1/datamap?{query}", headers=auth("security"))
    assert resp.status == status


async def test_proxies_may_not_read_the_datamap(client, auth):
    assert (await client.get("/v1/datamap", headers=auth("proxy"))).status == 403
