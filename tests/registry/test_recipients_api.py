"""`/v1/recipients`: CRUD, roles, four-eyes review, grant re-review, validation, conflicts."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

PROBLEM = "application/problem+json"
P = "https://sharewall.dev/problems/"


def recipient_body(rid: str, **overrides):
    body = {
        "id": rid,
        "name": "Twilio Inc.",
        "kind": "ott_provider",
        "regions": ["US", "SG"],
        "hosts": [f"api.{rid}.example", f"*.{rid}.example"],
        "grants": [
            {
                "purpose": "service_delivery",
                "categories": ["contact.phone_number", "comms.content"],
                "legal_basis": "contract",
            }
        ],
    }
    body.update(overrides)
    return body


async def propose(client, auth, rid, who="engineer", **overrides):
    resp = await client.post(
        "/v1/recipients", json=recipient_body(rid, **overrides), headers=auth(who)
    )
    assert resp.status == 201, await resp.text()
    return await resp.json()


async def approve(client, auth, rid, who="security"):
    """Approve the version the reviewer reads (If-Match is required)."""
    current = await client.get(f"/v1/recipients/{rid}", headers=auth(who))
    etag = current.headers.get("ETag", '"0"')
    return await client.post(
        f"/v1/recipients/{rid}/approve", headers={**auth(who), "If-Match": etag}
    )


async def test_engineer_proposes_and_everyone_allowed_reads_it(client, auth, unique):
    rid = unique("twilio")
    created = await propose(client, auth, rid)
    assert created["status"] == "proposed"
    assert created["proposed_by"] == "eng-alice"
    assert created["hosts"] == sorted([f"api.{rid}.example", f"*.{rid}.example"])
    assert [g["status"] for g in created["grants"]] == ["proposed"]
    for role in ("engineer", "security", "admin"):
        resp = await client.get(f"/v1/recipients/{rid}", headers=auth(role))
        assert resp.status == 200
        assert resp.headers["ETag"] == f'"{created["version"]}"'
        assert (await resp.json())["id"] == rid


READERS = {"engineer", "security", "admin"}
NEW = "new"  # placeholder: a fresh recipient body


@pytest.mark.parametrize(
    ("method", "path", "body", "allowed"),
    [
        pytest.param("post", "/v1/recipients", NEW, {"engineer"}, id="create"),
        pytest.param("get", "/v1/recipients", None, READERS, id="list"),
        pytest.param("get", "/v1/recipients/{rid}", None, READERS, id="read"),
        pytest.param("patch", "/v1/recipients/{rid}", {"notes": "n"}, {"engineer"}, id="edit"),
        pytest.param(
            "post",
            "/v1/recipients/{rid}/grants",
            {"purpose": "billing", "categories": ["contact.name"]},
            {"engineer"},
            id="add grant",
        ),
        pytest.param("post", "/v1/recipients/{rid}/approve", None, {"security"}, id="approve"),
        pytest.param("post", "/v1/recipients/{rid}/suspend", None, {"security"}, id="suspend"),
        pytest.param("post", "/v1/recipients/{rid}/revoke", None, {"security"}, id="revoke"),
        pytest.param("delete", "/v1/recipients/{rid}", None, {"engineer", "security"}, id="delete"),
        pytest.param(
            "patch",
            "/v1/recipients/{rid}/grants/{gid}",
            {"categories": ["contact.email"]},
            {"engineer"},
            id="edit grant",
        ),
        pytest.param(
            "post",
            "/v1/recipients/{rid}/grants/{gid}/revoke",
            None,
            {"security"},
            id="revoke grant",
        ),
        pytest.param(
            "delete", "/v1/recipients/{rid}/grants/{gid}", None, {"engineer"}, id="delete grant"
        ),
    ],
)
async def test_roles_are_enforced_per_endpoint(client, auth, unique, method, path, body, allowed):
    rid = unique("roles")
    created = await propose(client, auth, rid, who="engineer2")
    url = path.format(rid=rid, gid=created["grants"][0]["id"])
    if body == NEW:
        body = recipient_body(unique("other"))
    resp = await client.request(method, url, json=body)
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    for role in ("engineer", "security", "proxy", "admin"):
        resp = await client.request(method, url, json=body, headers=auth(role))
        if role in allowed:
            assert resp.status not in (401, 403), (role, await resp.text())
        else:
            assert resp.status == 403, (role, await resp.text())
            assert (await resp.json())["type"] == P + "forbidden-role"


async def test_four_eyes_the_proposer_cannot_approve_but_a_second_person_can(
    client, auth, unique, sessions
):
    rid = unique("fe")
    await propose(client, auth, rid)
    # A security token named like the proposer is the same person: refused.
    from registry.tokens import create_token

    async with sessions() as session:
        _, same_person = await create_token(session, name="eng-alice", role="security")
        await session.commit()
    current = await client.get(f"/v1/recipients/{rid}", headers=auth("security"))
    version = (await current.json())["version"]
    resp = await client.post(
        f"/v1/recipients/{rid}/approve",
        headers={"Authorization": f"Bearer {same_person}", "If-Match": f'"{version}"'},
    )
    assert resp.status == 403
    assert (await resp.json())["type"] == P + "four-eyes"
    resp = await approve(client, auth, rid)
    assert resp.status == 200
    body = await resp.json()
    assert body["status"] == "approved"
    assert [(g["status"], g["approved_by"]) for g in body["grants"]] == [("approved", "sec-carol")]


async def test_approve_refused_to_whoever_last_changed_it(client, auth, unique, sessions):
    rid = unique("fe2")
    await propose(client, auth, rid)
    from registry.tokens import create_token

    async with sessions() as session:
        _, bob_sec = await create_token(session, name="eng-bob", role="security")
        await session.commit()
    resp = await client.patch(
        f"/v1/recipients/{rid}", json={"notes": "DPA signed"}, headers=auth("engineer2")
    )
    assert resp.status == 200
    version = (await resp.json())["version"]
    resp = await client.post(
        f"/v1/recipients/{rid}/approve",
        headers={"Authorization": f"Bearer {bob_sec}", "If-Match": f'"{version}"'},
    )
    assert resp.status == 403
    assert (await resp.json())["type"] == P + "four-eyes"


async def test_changing_a_grant_of_a_live_recipient_is_pending_until_approved(client, auth, unique):
    rid = unique("regrant")
    await propose(
        client,
        auth,
        rid,
        grants=[
            {"purpose": "service_delivery", "categories": ["contact.phone_number"]},
            {"purpose": "billing", "categories": ["contact.name"]},
        ],
    )
    assert (await approve(client, auth, rid)).status == 200
    current = await (await client.get(f"/v1/recipients/{rid}", headers=auth("engineer"))).json()
    billing = next(g for g in current["grants"] if g["purpose"] == "billing")
    resp = await client.patch(
        f"/v1/recipients/{rid}/grants/{billing['id']}",
        json={"categories": ["contact.name", "contact.email"]},
        headers=auth("engineer"),
    )
    assert resp.status == 200, await resp.text()
    after = await (await client.get(f"/v1/recipients/{rid}", headers=auth("engineer"))).json()
    # The live grant keeps its approved values; the edit waits as a pending change.
    live = {g["purpose"]: (g["status"], g["categories"], g["change"]) for g in after["grants"]}
    assert live["billing"] == ("approved", ["contact.name"], "update")
    assert after["status"] == "approved"
    changed = after["pending_change"]["diff"]["grants"]["changed"]
    assert changed == [
        {
            "id": billing["id"],
            "purpose": "billing",
            "fields": {"categories": [["contact.name"], ["contact.name", "contact.email"]]},
        }
    ]
    resp = await approve(client, auth, rid)
    assert resp.status == 200
    body = await resp.json()
    assert body["pending_change"] is None
    billing_now = next(g for g in body["grants"] if g["purpose"] == "billing")
    assert billing_now["categories"] == ["contact.name", "contact.email"]
    assert billing_now["approved_by"] == "sec-carol"
    resp = await approve(client, auth, rid)
    assert resp.status == 409  # nothing left to approve


async def test_edit_of_a_live_recipient_is_pending_and_the_live_version_stays(client, auth, unique):
    rid = unique("material")
    await propose(client, auth, rid)
    await approve(client, auth, rid)
    resp = await client.patch(
        f"/v1/recipients/{rid}", json={"regions": ["US"]}, headers=auth("engineer")
    )
    body = await resp.json()
    assert body["status"] == "approved"
    assert body["regions"] == ["US", "SG"]
    assert body["pending_change"]["diff"]["fields"] == {"regions": [["US", "SG"], ["US"]]}
    assert body["pending_change"]["proposed"]["regions"] == ["US"]


async def test_suspend_and_revoke_change_status(client, auth, unique):
    rid = unique("susp")
    await propose(client, auth, rid)
    resp = await client.post(f"/v1/recipients/{rid}/suspend", headers=auth("security"))
    assert resp.status == 409  # only approved can be suspended
    await approve(client, auth, rid)
    resp = await client.post(
        f"/v1/recipients/{rid}/suspend", json={"note": "incident 42"}, headers=auth("security")
    )
    assert (await resp.json())["status"] == "suspended"
    resp = await client.post(f"/v1/recipients/{rid}/revoke", headers=auth("security"))
    assert (await resp.json())["status"] == "revoked"
    resp = await approve(client, auth, rid, who="security2")
    assert resp.status == 409


async def test_grant_revoke_and_delete(client, auth, unique):
    rid = unique("grev")
    created = await propose(client, auth, rid)
    gid = created["grants"][0]["id"]
    resp = await client.post(f"/v1/recipients/{rid}/grants/{gid}/revoke", headers=auth("security"))
    assert resp.status == 200
    assert (await resp.json())["grants"][0]["status"] == "revoked"
    resp = await client.delete(f"/v1/recipients/{rid}/grants/{gid}", headers=auth("engineer"))
    assert resp.status == 204
    resp = await client.delete(f"/v1/recipients/{rid}/grants/{gid}", headers=auth("engineer"))
    assert resp.status == 404


async def test_grant_writes_carry_the_new_etag_for_the_next_if_match(client, auth, unique):
    """A client chains If-Match through grant writes without reading the recipient again."""
    rid = unique("chain")
    await propose(client, auth, rid, grants=[])
    etag = (await client.get(f"/v1/recipients/{rid}", headers=auth("engineer"))).headers["ETag"]
    resp = await client.post(
        f"/v1/recipients/{rid}/grants",
        json={"purpose": "troubleshooting", "categories": ["network.ip_address"]},
        headers={**auth("engineer"), "If-Match": etag},
    )
    assert resp.status == 201
    gid, etag = (await resp.json())["id"], resp.headers["ETag"]
    resp = await client.patch(
        f"/v1/recipients/{rid}/grants/{gid}",
        json={"categories": ["network.ip_address", "contact.email"]},
        headers={**auth("engineer"), "If-Match": etag},
    )
    assert resp.status == 200
    etag = resp.headers["ETag"]
    resp = await client.delete(
        f"/v1/recipients/{rid}/grants/{gid}", headers={**auth("engineer"), "If-Match": etag}
    )
    assert resp.status == 204
    assert resp.headers["ETag"] != etag  # the recipient's version moved
    etag = resp.headers["ETag"]
    current = await client.get(f"/v1/recipients/{rid}", headers=auth("engineer"))
    assert current.headers["ETag"] == etag
    resp = await client.patch(
        f"/v1/recipients/{rid}",
        json={"name": "Chained Inc."},
        headers={**auth("engineer"), "If-Match": etag},
    )
    assert resp.status == 200


async def test_staged_grant_removal_carries_the_new_etag(client, auth, unique):
    rid = unique("stage")
    gid = (await propose(client, auth, rid))["grants"][0]["id"]
    assert (await approve(client, auth, rid)).status == 200
    etag = (await client.get(f"/v1/recipients/{rid}", headers=auth("engineer"))).headers["ETag"]
    resp = await client.delete(
        f"/v1/recipients/{rid}/grants/{gid}", headers={**auth("engineer"), "If-Match": etag}
    )
    assert resp.status == 202
    assert resp.headers["ETag"] == f'"{(await resp.json())["version"]}"' != etag


async def test_revoking_a_grant_honours_if_match(client, auth, unique):
    rid = unique("grevm")
    created = await propose(client, auth, rid)
    gid, stale = created["grants"][0]["id"], f'"{created["version"]}"'
    resp = await client.patch(
        f"/v1/recipients/{rid}", json={"name": "Moved Inc."}, headers=auth("engineer")
    )
    current = resp.headers["ETag"]
    url = f"/v1/recipients/{rid}/grants/{gid}/revoke"
    resp = await client.post(url, headers={**auth("security"), "If-Match": stale})
    assert resp.status == 412
    assert (await resp.json())["type"] == P + "version-mismatch"
    resp = await client.post(url, headers={**auth("security"), "If-Match": current})
    assert resp.status == 200
    assert (await resp.json())["grants"][0]["status"] == "revoked"


async def test_add_grant_then_delete_recipient(client, auth, unique):
    rid = unique("del")
    await propose(client, auth, rid, grants=[])
    resp = await client.post(
        f"/v1/recipients/{rid}/grants",
        json={"purpose": "troubleshooting", "categories": ["network.ip_address"]},
        headers=auth("engineer"),
    )
    assert resp.status == 201
    grant = await resp.json()
    assert grant["status"] == "proposed"
    assert resp.headers["Location"].endswith(f"/grants/{grant['id']}")
    assert (await client.delete(f"/v1/recipients/{rid}", headers=auth("engineer"))).status == 204
    resp = await client.get(f"/v1/recipients/{rid}", headers=auth("engineer"))
    assert resp.status == 404
    assert resp.content_type == PROBLEM


async def test_duplicate_id_and_taken_host_are_conflicts(client, auth, unique):
    rid = unique("dup")
    await propose(client, auth, rid)
    resp = await client.post("/v1/recipients", json=recipient_body(rid), headers=auth("engineer"))
    assert resp.status == 409
    other = unique("dup")
    resp = await client.post(
        "/v1/recipients",
        json=recipient_body(other, hosts=[f"API.{rid}.example."]),  # normalised to the same host
        headers=auth("engineer"),
    )
    assert resp.status == 409
    body = await resp.json()
    assert body["type"] == P + "conflict"
    assert body["hosts"] == {f"api.{rid}.example": rid}


async def test_if_match_guards_against_lost_updates(client, auth, unique):
    rid = unique("etag")
    created = await propose(client, auth, rid)
    stale = f'"{created["version"]}"'
    resp = await client.patch(
        f"/v1/recipients/{rid}",
        json={"notes": "a"},
        headers={**auth("engineer"), "If-Match": stale},
    )
    assert resp.status == 200
    resp = await client.patch(
        f"/v1/recipients/{rid}",
        json={"notes": "b"},
        headers={**auth("engineer"), "If-Match": stale},
    )
    assert resp.status == 412
    assert (await resp.json())["type"] == P + "version-mismatch"


async def test_list_filters_and_paginates(client, auth, unique):
    prefix = unique("page")
    for i in range(3):
        await propose(client, auth, f"{prefix}-{i}", hosts=[f"h{i}.{prefix}.example"])
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": "2", "status": "proposed", "kind": "ott_provider"}
        if cursor:
            params["cursor"] = cursor
        resp = await client.get("/v1/recipients", params=params, headers=auth("security"))
        assert resp.status == 200
        page = await resp.json()
        seen += [r["id"] for r in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    mine = [s for s in seen if s.startswith(prefix)]
    assert mine == [f"{prefix}-{i}" for i in range(3)]
    assert len(seen) == len(set(seen))  # keyset pages never repeat a recipient


@pytest.mark.parametrize(
    ("body_change", "field"),
    [
        pytest.param({"kind": "spaceship"}, "kind", id="unknown kind"),
        pytest.param(
            {"grants": [{"purpose": "world_domination", "categories": []}]},
            "grants.0.purpose",
            id="unknown purpose",
        ),
        pytest.param(
            {"grants": [{"purpose": "billing", "categories": ["contact.shoe_size"]}]},
            "grants.0.categories",
            id="unknown category",
        ),
        pytest.param({"status": "approved"}, "status", id="engineer cannot self-approve"),
        pytest.param({"colour": "blue"}, "colour", id="unknown field"),
        pytest.param({"hosts": ["bad host!"]}, "hosts", id="bad host pattern"),
        pytest.param({"id": "Bad Id"}, "id", id="bad slug"),
        pytest.param({"name": "n" * 201}, "name", id="name longer than the column"),
        pytest.param(
            {"hosts": [".".join(["a" * 60] * 5) + ".example"]},
            "hosts",
            id="host longer than the column",
        ),
    ],
)
async def test_invalid_bodies_are_422_naming_the_field(client, auth, unique, body_change, field):
    body = recipient_body(unique("bad"), **body_change)
    resp = await client.post("/v1/recipients", json=body, headers=auth("engineer"))
    assert resp.status == 422, await resp.text()
    problem = await resp.json()
    assert problem["type"] == P + "validation-error"
    assert problem["errors"][0]["field"] == field


async def test_unknown_category_in_grant_patch_is_422(client, auth, unique):
    rid = unique("gp")
    created = await propose(client, auth, rid)
    gid = created["grants"][0]["id"]
    resp = await client.patch(
        f"/v1/recipients/{rid}/grants/{gid}",
        json={"categories": ["nope.nope"]},
        headers=auth("engineer"),
    )
    assert resp.status == 422
    assert (await resp.json())["errors"][0]["field"] == "categories"


@pytest.mark.parametrize(
    ("data", "status", "slug"),
    [
        pytest.param(b"{not json", 400, "malformed-json", id="malformed json"),
        pytest.param(b"", 400, "malformed-json", id="empty body"),
        pytest.param(b"[1, 2]", 422, "validation-error", id="not an object"),
        pytest.param(
            b'{"id": "' + b"x" * (2 * 1024 * 1024) + b'"}', 413, "payload-too-large", id="huge"
        ),
    ],
)
async def test_bad_bodies_are_problems(client, auth, data, status, slug):
    """Malformed and oversized bodies get a problem document, never a 500."""
    resp = await client.post(
        "/v1/recipients",
        data=data,
        headers={**auth("engineer"), "Content-Type": "application/json"},
    )
    assert resp.status == status
    assert resp.content_type == PROBLEM
    assert (await resp.json())["type"] == P + slug


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("x' OR '1'='1", id="quote"),
        pytest.param("%", id="percent"),
        pytest.param("x; DROP TABLE recipient; --", id="statement"),
    ],
)
async def test_sql_metacharacters_in_filters_and_ids_are_just_values(client, auth, value):
    resp = await client.get("/v1/recipients", params={"kind": value}, headers=auth("engineer"))
    assert resp.status == 422
    resp = await client.get("/v1/recipients", params={"cursor": value}, headers=auth("engineer"))
    assert resp.status == 422  # a cursor this API did not make
    resp = await client.get(f"/v1/recipients/{value}", headers=auth("engineer"))
    assert resp.status == 404
    resp = await client.get("/v1/recipients", headers=auth("engineer"))
    assert resp.status == 200  # the table is still there


async def test_concurrent_edits_with_the_same_if_match_let_exactly_one_win(client, auth, unique):
    import asyncio

    rid = unique("race")
    created = await propose(client, auth, rid)
    headers = {**auth("engineer"), "If-Match": f'"{created["version"]}"'}

    async def edit(i: int) -> int:
        resp = await client.patch(f"/v1/recipients/{rid}", json={"notes": f"n{i}"}, headers=headers)
        return resp.status

    statuses = await asyncio.gather(*(edit(i) for i in range(8)))
    assert sorted(statuses) == [200] + [412] * 7


async def test_huge_chunked_body_without_length_is_413(client, auth):
    async def chunks():
        for _ in range(40):
            yield b"x" * 65536

    resp = await client.post(
        "/v1/recipients",
        data=chunks(),
        headers={**auth("engineer"), "Content-Type": "application/json"},
    )
    assert resp.status == 413


async def test_if_match_is_a_list_of_strong_tags_or_star(client, auth, unique):
    """RFC 9110 §13.1.1: a list matches when one strong tag is current; a weak tag never
    matches; `*` matches any version (but names none for an approval); junk is 400."""
    rid = unique("ifm")
    created = await propose(client, auth, rid)
    url, version = f"/v1/recipients/{rid}", created["version"]

    async def patch(if_match, notes):
        headers = {**auth("engineer"), "If-Match": if_match}
        return await client.patch(url, json={"notes": notes}, headers=headers)

    weak = await patch(f'W/"{version}"', "weak")
    assert weak.status == 412
    assert (await weak.json())["current_version"] == version
    listed = await patch(f'"{version + 7}", "abc", "{version}"', "listed")
    assert listed.status == 200, await listed.text()
    version = (await listed.json())["version"]
    assert (await patch(f'"{version - 1}", W/"{version}"', "stale")).status == 412
    assert (await patch("*", "any")).status == 200
    for junk in (str(version + 1), f'"{version + 1}', f'"{version + 1}" x', ",", "W/*"):
        resp = await patch(junk, "junk")
        assert resp.status == 400, junk
        assert (await resp.json())["type"] == P + "bad-if-match"
    # Two field lines are one list.
    current = (await (await client.get(url, headers=auth("engineer"))).json())["version"]
    resp = await client.patch(
        url,
        json={"notes": "two lines"},
        headers=CIMultiDict(
            [*auth("engineer").items(), ("If-Match", '"0"'), ("If-Match", f'"{current}"')]
        ),
    )
    assert resp.status == 200
    review = f"/v1/recipients/{rid}/approve"
    star = await client.post(review, headers={**auth("security"), "If-Match": "*"})
    assert star.status == 428
    assert (await star.json())["type"] == P + "precondition-required"
    current = (await (await client.get(url, headers=auth("security"))).json())["version"]
    weak = await client.post(review, headers={**auth("security"), "If-Match": f'W/"{current}"'})
    assert weak.status == 412
