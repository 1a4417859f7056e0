"""`/v1/workloads`: proposed by engineers, approved by a second person, live version served to
proxies until an edit is approved; in `registry apply` and `/v1/changes`."""

from __future__ import annotations

import asyncio

import pytest
import yaml

from registry.tokens import create_token
from sharewall.cli import main
from sharewall.snapshot import Snapshot

P = "https://sharewall.dev/problems/"


async def make_recipient(client, auth, rid: str) -> None:
    body = {"id": rid, "name": "R", "kind": "vendor", "hosts": [f"{rid}.example"]}
    assert (await client.post("/v1/recipients", json=body, headers=auth("engineer"))).status == 201


async def approve(client, path: str, headers):
    etag = (await client.get(path, headers=headers)).headers["ETag"]
    return await client.post(f"{path}/approve", headers={**headers, "If-Match": etag})


async def snapshot(client, auth) -> Snapshot:
    return Snapshot.from_data(
        await (await client.get("/v1/snapshot", headers=auth("proxy"))).json()
    )


async def test_a_workload_is_proposed_approved_by_another_person_and_then_enforced(
    client, auth, unique, sessions
):
    rid, ns = unique("wrcp"), unique("ns")
    await make_recipient(client, auth, rid)
    resp = await client.post(
        "/v1/workloads",
        json={
            "namespace": ns,
            "name": "sms-gateway",
            "purposes": ["service_delivery"],
            "recipients": [rid],
        },
        headers=auth("engineer"),
    )
    assert resp.status == 201, await resp.text()
    created = await resp.json()
    assert (created["status"], created["proposed_by"]) == ("proposed", "eng-alice")
    assert resp.headers["Location"] == f"/v1/workloads/{ns}/sms-gateway"
    path = f"/v1/workloads/{ns}/sms-gateway"
    assert (await snapshot(client, auth)).workload(ns, "sms-gateway") is None  # not live yet
    async with sessions() as session:
        _, alice_sec = await create_token(
            session, name=unique("a"), role="security", owner="eng-alice"
        )
        await session.commit()
    resp = await approve(client, path, {"Authorization": f"Bearer {alice_sec}"})
    assert resp.status == 403
    assert (await resp.json())["type"] == P + "four-eyes"
    assert (await client.post(f"{path}/approve", headers=auth("security"))).status == 428
    resp = await approve(client, path, auth("security"))
    assert resp.status == 200, await resp.text()
    live = (await snapshot(client, auth)).workload(ns, "sms-gateway")
    assert live is not None and live.status == "approved"
    assert live.recipients == (rid,)


async def test_an_edit_of_a_live_workload_waits_for_approval(client, auth, unique):
    ns = unique("ns")
    path = f"/v1/workloads/{ns}/billing-job"
    await client.post(
        "/v1/workloads",
        json={"namespace": ns, "name": "billing-job", "purposes": ["billing"]},
        headers=auth("engineer"),
    )
    assert (await approve(client, path, auth("security"))).status == 200
    resp = await client.patch(
        path, json={"purposes": ["billing", "marketing"]}, headers=auth("engineer2")
    )
    body = await resp.json()
    assert body["purposes"] == ["billing"]
    assert body["pending_change"]["diff"]["fields"] == {
        "purposes": [["billing"], ["billing", "marketing"]]
    }
    assert (await snapshot(client, auth)).workload(ns, "billing-job").purposes == ("billing",)
    changes = await (await client.get("/v1/changes", headers=auth("security"))).json()
    (mine,) = [c for c in changes["items"] if c["entity_id"] == f"{ns}/billing-job"]
    assert (mine["entity_type"], mine["kind"], mine["authors"]) == (
        "workload",
        "update",
        ["eng-bob"],
    )
    assert mine["links"]["approve"] == f"{path}/approve"
    resp = await client.post(
        f"{path}/approve", headers={**auth("security"), "If-Match": f'"{mine["version"]}"'}
    )
    assert resp.status == 200, await resp.text()
    assert (await snapshot(client, auth)).workload(ns, "billing-job").purposes == (
        "billing",
        "marketing",
    )


async def test_a_live_workload_is_revoked_before_it_can_be_deleted(client, auth, unique):
    ns = unique("ns")
    path = f"/v1/workloads/{ns}/crm"
    await client.post(
        "/v1/workloads",
        json={"namespace": ns, "name": "crm", "purposes": ["marketing"]},
        headers=auth("engineer"),
    )
    await approve(client, path, auth("security"))
    assert (await client.delete(path, headers=auth("engineer"))).status == 409
    resp = await client.post(
        f"{path}/revoke", json={"note": "decommissioned"}, headers=auth("security")
    )
    assert (await resp.json())["status"] == "revoked"
    assert (await snapshot(client, auth)).workload(ns, "crm") is None
    assert (await client.delete(path, headers=auth("engineer"))).status == 204
    assert (await client.get(path, headers=auth("engineer"))).status == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({"purposes": ["world_domination"]}, "purposes", id="unknown purpose"),
        pytest.param({"purposes": []}, "purposes", id="no purpose"),
        pytest.param(
            {"purposes": ["billing"], "recipients": ["no-such-vendor"]},
            "recipients",
            id="unknown recipient",
        ),
        pytest.param({"purposes": ["billing"], "status": "approved"}, "status", id="self-approval"),
    ],
)
async def test_invalid_workloads_are_422_naming_the_field(client, auth, unique, body, field):
    resp = await client.post(
        "/v1/workloads",
        json={"namespace": unique("ns"), "name": "w", **body},
        headers=auth("engineer"),
    )
    assert resp.status == 422, await resp.text()
    assert field in (await resp.json())["errors"][0]["field"]


@pytest.mark.parametrize(
    ("method", "suffix", "allowed"),
    [
        pytest.param("get", "", {"engineer", "security", "admin"}, id="read"),
        pytest.param("patch", "", {"engineer"}, id="edit"),
        pytest.param("post", "/approve", {"security"}, id="approve"),
        pytest.param("post", "/reject", {"security"}, id="reject"),
    ],
)
async def test_workload_roles(client, auth, unique, method, suffix, allowed):
    ns = unique("ns")
    await client.post(
        "/v1/workloads",
        json={"namespace": ns, "name": "w", "purposes": ["billing"]},
        headers=auth("engineer2"),
    )
    for role in ("engineer", "security", "proxy", "admin"):
        resp = await client.request(
            method,
            f"/v1/workloads/{ns}/w{suffix}",
            json={"purposes": ["billing"]} if method == "patch" else None,
            headers=auth(role),
        )
        if role in allowed:
            assert resp.status not in (401, 403), (role, await resp.text())
        else:
            assert resp.status == 403, role


def _apply(capsys, *argv):
    code = main(["registry", "apply", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


async def test_registry_apply_manages_workloads(client, auth, unique, db_url, tmp_path, capsys):
    rid, ns = unique("wapp"), unique("ns")
    doc = {
        "recipients": [
            {
                "id": rid,
                "name": "R",
                "kind": "vendor",
                "status": "approved",
                "hosts": [f"{rid}.example"],
            }
        ],
        "workloads": [
            {
                "namespace": ns,
                "name": "sms",
                "status": "approved",
                "purposes": ["service_delivery"],
                "recipients": [rid],
            }
        ],
    }
    # Through the API nothing is approved: the workload is a proposal.
    resp = await client.post("/v1/apply", json=doc, headers=auth("security"))
    assert resp.status == 200, await resp.text()
    applied = await resp.json()
    assert f"{ns}/sms" in applied["awaiting_approval"]
    assert applied["workloads"]["added"][0]["status"] == "proposed"
    assert (await snapshot(client, auth)).workload(ns, "sms") is None
    # The operator's bootstrap (--db) writes it approved as the file says.
    path = tmp_path / "registry.yaml"
    path.write_text(yaml.safe_dump(doc))
    code, out, err = await asyncio.to_thread(_apply, capsys, str(path), "--db", db_url)
    assert code == 0, err
    assert f"~ workload {ns}/sms" in out
    assert (await snapshot(client, auth)).workload(ns, "sms").status == "approved"
    code, out, _ = await asyncio.to_thread(_apply, capsys, str(path), "--db", db_url)
    assert out.strip().splitlines()[-1] == "no changes"
    # A later purpose added in the file is a pending change of the live workload.
    doc["workloads"][0]["purposes"] = ["service_delivery", "marketing"]
    resp = await client.post("/v1/apply", json=doc, headers=auth("engineer"))
    assert resp.status == 200, await resp.text()
    (change,) = (await resp.json())["workloads"]["changed"]
    assert change["pending_approval"] is True
    assert (await snapshot(client, auth)).workload(ns, "sms").purposes == ("service_delivery",)
