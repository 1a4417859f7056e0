"""`/v1/audit`: every write leaves an event; filters and cursor pages."""

from __future__ import annotations

import pytest


async def events(client, auth, **params):
    resp = await client.get("/v1/audit", params=params, headers=auth("security"))
    assert resp.status == 200, await resp.text()
    return (await resp.json())["items"]


async def test_every_write_has_exactly_one_audit_event(client, auth, unique):
    rid = unique("aud")
    eng, sec = auth("engineer"), auth("security")
    steps = [
        (
            "post",
            "/v1/recipients",
            eng,
            {"id": rid, "name": "A", "kind": "vendor", "hosts": [f"{rid}.example"]},
            "recipient.create",
        ),
        ("patch", f"/v1/recipients/{rid}", eng, {"notes": "dpa"}, "recipient.update"),
        (
            "post",
            f"/v1/recipients/{rid}/grants",
            eng,
            {"purpose": "billing", "categories": ["contact.name"]},
            "grant.create",
        ),
        ("post", f"/v1/recipients/{rid}/approve", sec, None, "recipient.approve"),
        ("post", f"/v1/recipients/{rid}/suspend", sec, None, "recipient.suspend"),
        ("post", f"/v1/recipients/{rid}/revoke", sec, None, "recipient.revoke"),
        ("delete", f"/v1/recipients/{rid}", eng, None, "recipient.delete"),
    ]
    for method, path, headers, body, action in steps:
        before = await events(client, auth, entity_id=rid, entity_type="recipient")
        if path.endswith("/approve"):
            etag = (await client.get(f"/v1/recipients/{rid}", headers=sec)).headers["ETag"]
            headers = {**headers, "If-Match": etag}
        resp = await client.request(method, path, json=body, headers=headers)
        assert resp.status < 300, (action, await resp.text())
        trail = await events(client, auth, action=action)
        assert any(
            e["entity_id"] in (rid,) or (e["after"] or {}).get("recipient_id") == rid for e in trail
        ), action
        if action.startswith("recipient."):
            after = await events(client, auth, entity_id=rid, entity_type="recipient")
            assert len(after) == len(before) + 1, action
            newest = after[0]
            assert newest["action"] == action
            assert newest["actor"] == (
                "sec-carol" if headers.items() >= sec.items() else "eng-alice"
            )
    trail = await events(client, auth, entity_id=rid, entity_type="recipient")
    assert [e["action"] for e in reversed(trail)] == [
        s[4] for s in steps if s[4].startswith("recipient.")
    ]
    deleted = trail[0]
    assert deleted["after"] is None and deleted["before"]["id"] == rid


async def test_refused_write_leaves_no_event(client, auth, unique):
    rid = unique("noaud")
    await client.post(
        "/v1/recipients", json={"id": rid, "name": "A", "kind": "vendor"}, headers=auth("engineer")
    )
    resp = await client.post(f"/v1/recipients/{rid}/approve", headers=auth("engineer"))
    assert resp.status == 403
    trail = await events(client, auth, entity_id=rid)
    assert [e["action"] for e in trail] == ["recipient.create"]


async def test_audit_pages_with_a_cursor_and_filters_by_time(client, auth, unique):
    prefix = unique("pg")
    for i in range(5):
        resp = await client.post(
            "/v1/recipients",
            json={"id": f"{prefix}-{i}", "name": "A", "kind": "vendor"},
            headers=auth("engineer"),
        )
        assert resp.status == 201
    all_events = await events(client, auth, actor="eng-alice", action="recipient.create")
    ids = []
    cursor = None
    while True:
        params = {"actor": "eng-alice", "action": "recipient.create", "limit": "2"}
        if cursor:
            params["cursor"] = cursor
        page = await (await client.get("/v1/audit", params=params, headers=auth("admin"))).json()
        ids += [e["id"] for e in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert ids == [e["id"] for e in all_events]
    assert ids == sorted(ids, reverse=True)
    assert await events(client, auth, since="2999-01-01T00:00:00Z") == []
    assert len(await events(client, auth, until="2999-01-01", action="recipient.create")) >= 5


@pytest.mark.parametrize(
    ("params", "status"),
    [
        pytest.param({"since": "yesterday"}, 422, id="bad time"),
        # One pagination helper for every list: a cursor it did not make is a 422 naming it.
        pytest.param({"cursor": "!!!"}, 422, id="bad cursor"),
        pytest.param({"cursor": "InRleHQi"}, 422, id="cursor of the wrong type"),
        pytest.param({"limit": "0"}, 422, id="bad limit"),
        pytest.param({"actor": "x' OR 1=1 --"}, 200, id="sql metacharacters are values"),
        pytest.param({"entity_id": "%"}, 200, id="percent is not a wildcard"),
    ],
)
async def test_audit_query_validation(client, auth, params, status):
    resp = await client.get("/v1/audit", params=params, headers=auth("engineer"))
    assert resp.status == status
    if status == 200:
        assert (await resp.json())["items"] == []


@pytest.mark.parametrize("role", ["proxy"])
async def test_proxy_cannot_read_audit(client, auth, role):
    assert (await client.get("/v1/audit", headers=auth(role))).status == 403


@pytest.mark.parametrize(
    "statement",
    [
        pytest.param("UPDATE audit_event SET actor = 'someone-else'", id="update"),
        pytest.param("DELETE FROM audit_event", id="delete"),
    ],
)
async def test_the_database_refuses_to_rewrite_the_audit_trail(client, auth, sessions, statement):
    import sqlalchemy as sa
    from sqlalchemy.exc import DBAPIError

    await client.post("/v1/tokens", json={"name": "t", "role": "proxy"}, headers=auth("admin"))

    async def count() -> int:
        async with sessions() as session:
            return (await session.exec(sa.text("SELECT count(*) FROM audit_event"))).scalar_one()

    # The count is read in a transaction of its own: on SQLite, a write begun inside a read
    # transaction cannot wait for the app's background writer (the admin token's last-used
    # write) and fails at once with "database is locked" (a lock upgrade deadlock).
    before = await count()
    assert before > 0
    async with sessions() as session:
        with pytest.raises(DBAPIError, match="append-only"):
            await session.exec(sa.text(statement))
        await session.rollback()
    assert await count() == before
