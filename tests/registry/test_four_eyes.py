"""Four eyes over the audit trail, pending changes of live recipients, If-Match on approval,
rejection notes, token owners (people, not token names)."""

from __future__ import annotations

import orjson
import pytest

from registry.bundle import read_bundle
from registry.tokens import create_token

P = "https://sharewall.dev/problems/"


@pytest.fixture
async def person_tokens(sessions, unique):
    """`person_tokens(owner, role)` → a bearer header of a new token held by `owner`."""

    async def make(owner: str, role: str) -> dict[str, str]:
        async with sessions() as session:
            _, secret = await create_token(
                session, name=unique(f"{owner}-{role}"), role=role, owner=owner
            )
            await session.commit()
        return {"Authorization": f"Bearer {secret}"}

    return make


async def live_recipient(client, auth, rid: str) -> dict:
    """A recipient proposed by eng-alice and approved by sec-carol (live)."""
    body = {
        "id": rid,
        "name": "Vendor",
        "kind": "vendor",
        "regions": ["SG"],
        "hosts": [f"api.{rid}.example"],
        "inspect_tls": True,
        "grants": [{"purpose": "customer_support", "categories": ["contact.email"]}],
    }
    resp = await client.post("/v1/recipients", json=body, headers=auth("engineer"))
    assert resp.status == 201, await resp.text()
    resp = await approve(client, rid, auth("security"))
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def etag_of(client, rid: str, headers) -> str:
    return (await client.get(f"/v1/recipients/{rid}", headers=headers)).headers["ETag"]


async def approve(client, rid: str, headers, note: str | None = None):
    etag = await etag_of(client, rid, headers)
    return await client.post(
        f"/v1/recipients/{rid}/approve",
        json={"note": note} if note else None,
        headers={**headers, "If-Match": etag},
    )


async def snapshot_entry(client, auth, rid: str) -> dict:
    snap = await (await client.get("/v1/snapshot", headers=auth("proxy"))).json()
    return next(r for r in snap["recipients"] if r["id"] == rid)


async def test_an_author_of_any_part_of_the_change_cannot_approve_it(
    client, auth, unique, person_tokens
):
    """Alice adds an exfiltration host, Bob edits the notes, Alice's security token approves."""
    rid = unique("exfil")
    await live_recipient(client, auth, rid)
    alice_eng = await person_tokens("alice", "engineer")
    alice_sec = await person_tokens("alice", "security")
    resp = await client.patch(
        f"/v1/recipients/{rid}",
        json={"hosts": [f"api.{rid}.example", "exfil.attacker.example"]},
        headers=alice_eng,
    )
    assert resp.status == 200, await resp.text()
    resp = await client.patch(
        f"/v1/recipients/{rid}", json={"notes": "DPA signed"}, headers=auth("engineer2")
    )
    assert resp.status == 200
    resp = await approve(client, rid, alice_sec)
    assert resp.status == 403
    problem = await resp.json()
    assert problem["type"] == P + "four-eyes"
    assert problem["authors"] == ["alice", "eng-bob"]
    assert "alice authored part of recipient" in problem["detail"]
    assert "recipient.update" in problem["detail"]
    # Neither the colleague who only touched the notes (as a reviewer) may approve it.
    bob_sec = await person_tokens("eng-bob", "security")
    assert (await approve(client, rid, bob_sec)).status == 403
    assert "exfil.attacker.example" not in (await snapshot_entry(client, auth, rid))["hosts"]
    resp = await approve(client, rid, auth("security"), note="host checked with the vendor")
    assert resp.status == 200, await resp.text()
    assert "exfil.attacker.example" in (await snapshot_entry(client, auth, rid))["hosts"]


async def test_weakening_a_live_recipient_is_pending_and_proxies_keep_the_approved_version(
    client, auth, unique
):
    rid = unique("tls")
    await live_recipient(client, auth, rid)
    resp = await client.patch(
        f"/v1/recipients/{rid}",
        json={"inspect_tls": False, "regions": ["SG", "US"]},
        headers=auth("engineer"),
    )
    body = await resp.json()
    assert body["inspect_tls"] is True  # the live version
    assert body["pending_change"]["diff"]["fields"] == {
        "regions": [["SG"], ["SG", "US"]],
        "inspect_tls": [True, False],
    }
    resp = await client.post(
        f"/v1/recipients/{rid}/grants",
        json={"purpose": "marketing", "categories": ["contact.email"]},
        headers=auth("engineer"),
    )
    assert resp.status == 201
    entry = await snapshot_entry(client, auth, rid)
    assert entry["inspect_tls"] is True
    assert entry["regions"] == ["SG"]
    assert [g["purpose"] for g in entry["grants"]] == ["customer_support"]
    bundle = await client.get("/v1/bundles/sharewall.tar.gz", headers=auth("proxy"))
    data = orjson.loads(read_bundle(await bundle.read())["sharewall/registry/data.json"])
    assert data["recipients"][rid]["inspect_tls"] is True  # OPA sidecars too
    changes = await (await client.get("/v1/changes", headers=auth("security"))).json()
    (mine,) = [c for c in changes["items"] if c["entity_id"] == rid]
    assert mine["kind"] == "update"
    assert mine["authors"] == ["eng-alice"]
    assert mine["live"]["inspect_tls"] is True
    assert mine["proposed"]["inspect_tls"] is False
    assert [g["purpose"] for g in mine["diff"]["grants"]["added"]] == ["marketing"]
    assert mine["links"]["approve"] == f"/v1/recipients/{rid}/approve"
    resp = await client.post(
        f"/v1/recipients/{rid}/approve",
        headers={**auth("security2"), "If-Match": f'"{mine["version"]}"'},
    )
    assert resp.status == 200, await resp.text()
    entry = await snapshot_entry(client, auth, rid)
    assert entry["inspect_tls"] is False
    assert sorted(g["purpose"] for g in entry["grants"]) == ["customer_support", "marketing"]
    changes = await (await client.get("/v1/changes", headers=auth("security"))).json()
    assert rid not in [c["entity_id"] for c in changes["items"]]


async def test_approve_needs_the_version_the_reviewer_looked_at(client, auth, unique):
    rid = unique("ifm")
    await live_recipient(client, auth, rid)
    await client.patch(
        f"/v1/recipients/{rid}", json={"kind": "affiliate"}, headers=auth("engineer")
    )
    seen = await etag_of(client, rid, auth("security"))
    resp = await client.post(f"/v1/recipients/{rid}/approve", headers=auth("security"))
    assert resp.status == 428
    assert (await resp.json())["type"] == P + "precondition-required"
    # The engineer widens it further after the reviewer looked.
    await client.patch(f"/v1/recipients/{rid}", json={"regions": ["US"]}, headers=auth("engineer"))
    resp = await client.post(
        f"/v1/recipients/{rid}/approve", headers={**auth("security"), "If-Match": seen}
    )
    assert resp.status == 412
    assert (await resp.json())["type"] == P + "version-mismatch"
    assert (await snapshot_entry(client, auth, rid))["kind"] == "vendor"


async def test_grant_removal_and_edit_of_a_live_recipient_wait_for_approval(client, auth, unique):
    rid = unique("grem")
    live = await live_recipient(client, auth, rid)
    gid = live["grants"][0]["id"]
    resp = await client.delete(f"/v1/recipients/{rid}/grants/{gid}", headers=auth("engineer"))
    assert resp.status == 202
    assert (await resp.json())["grants"][0]["change"] == "remove"
    assert [g["purpose"] for g in (await snapshot_entry(client, auth, rid))["grants"]] == [
        "customer_support"
    ]
    assert (await approve(client, rid, auth("security"))).status == 200
    assert (await snapshot_entry(client, auth, rid))["grants"] == []


async def test_reject_discards_the_pending_change_and_keeps_the_note(client, auth, unique):
    rid = unique("rej")
    await live_recipient(client, auth, rid)
    await client.patch(
        f"/v1/recipients/{rid}", json={"hosts": ["evil.example"]}, headers=auth("engineer")
    )
    resp = await client.post(
        f"/v1/recipients/{rid}/reject",
        json={"note": "evil.example is not the vendor's"},
        headers=auth("security2"),
    )
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["pending_change"] is None
    assert body["hosts"] == [f"api.{rid}.example"]
    got = await (await client.get(f"/v1/recipients/{rid}", headers=auth("engineer"))).json()
    assert [(r["action"], r["actor"], r["note"]) for r in got["reviews"]] == [
        ("approve", "sec-carol", None),
        ("reject", "sec-dave", "evil.example is not the vendor's"),
    ]
    trail = await (
        await client.get(
            "/v1/audit",
            params={"entity_id": rid, "action": "recipient.reject"},
            headers=auth("admin"),
        )
    ).json()
    assert trail["items"][0]["note"] == "evil.example is not the vendor's"
    # The host is free again for anyone.
    resp = await client.post(
        "/v1/recipients",
        json={"id": unique("other"), "name": "O", "kind": "vendor", "hosts": ["evil.example"]},
        headers=auth("engineer"),
    )
    assert resp.status == 201


async def test_rejecting_a_proposal_revokes_it(client, auth, unique):
    rid = unique("rejp")
    await client.post(
        "/v1/recipients", json={"id": rid, "name": "P", "kind": "vendor"}, headers=auth("engineer")
    )
    resp = await client.post(f"/v1/recipients/{rid}/reject", headers=auth("security"))
    assert (await resp.json())["status"] == "revoked"
    resp = await client.post(f"/v1/recipients/{rid}/reject", headers=auth("security"))
    assert resp.status == 409


async def test_two_tokens_of_one_person_count_as_one(client, auth, unique):
    """A token's owner is the audit actor; the token name is recorded beside it."""
    resp = await client.post(
        "/v1/tokens",
        json={"name": unique("frank-laptop"), "role": "engineer", "owner": "frank"},
        headers=auth("admin"),
    )
    assert resp.status == 201
    eng = {"Authorization": f"Bearer {(await resp.json())['secret']}"}
    sec_name = unique("frank-review")
    resp = await client.post(
        "/v1/tokens",
        json={"name": sec_name, "role": "security", "owner": "frank"},
        headers=auth("admin"),
    )
    created = await resp.json()
    assert created["owner"] == "frank"
    sec = {"Authorization": f"Bearer {created['secret']}"}
    rid = unique("frank")
    resp = await client.post(
        "/v1/recipients", json={"id": rid, "name": "F", "kind": "vendor"}, headers=eng
    )
    assert (await resp.json())["proposed_by"] == "frank"
    resp = await approve(client, rid, sec)
    assert resp.status == 403
    assert (await resp.json())["authors"] == ["frank"]
    trail = await (
        await client.get("/v1/audit", params={"entity_id": rid}, headers=auth("admin"))
    ).json()
    assert [(e["actor"], e["token_name"] == sec_name) for e in trail["items"]] == [("frank", False)]
    listed = await (await client.get("/v1/tokens", headers=auth("admin"))).json()
    assert {t["owner"] for t in listed["items"] if t["name"] == sec_name} == {"frank"}


async def test_an_approval_ends_the_authors_window(client, auth, unique, person_tokens):
    """Authors of an earlier, approved change may review a later change by someone else."""
    rid = unique("window")
    await live_recipient(client, auth, rid)  # authored by eng-alice, approved by sec-carol
    alice_sec = await person_tokens("eng-alice", "security")
    await client.patch(f"/v1/recipients/{rid}", json={"notes": "n"}, headers=auth("engineer2"))
    assert (await approve(client, rid, alice_sec)).status == 200
