"""`/v1/tokens`: admins create (secret shown once), list and revoke tokens."""

from __future__ import annotations

import asyncio

import pytest


async def test_admin_creates_a_token_whose_secret_works_once_shown(client, auth):
    resp = await client.post(
        "/v1/tokens", json={"name": "eng-frank", "role": "engineer"}, headers=auth("admin")
    )
    assert resp.status == 201
    created = await resp.json()
    secret = created["secret"]
    assert secret.startswith("sw_")
    resp = await client.get("/v1/recipients", headers={"Authorization": f"Bearer {secret}"})
    assert resp.status == 200
    for _ in range(200):  # the last-used write is made in the background, at once
        listed = await (await client.get("/v1/tokens", headers=auth("admin"))).json()
        mine = next(t for t in listed["items"] if t["id"] == created["id"])
        if mine["last_used_at"] is not None:
            break
        await asyncio.sleep(0.05)
    assert mine["name"] == "eng-frank"
    assert mine["last_used_at"] is not None
    assert all("secret" not in t and "token_hash" not in t for t in listed["items"])


async def test_revoked_token_is_refused_immediately(client, auth):
    created = await (
        await client.post(
            "/v1/tokens", json={"name": "tmp", "role": "security"}, headers=auth("admin")
        )
    ).json()
    bearer = {"Authorization": f"Bearer {created['secret']}"}
    assert (await client.get("/v1/audit", headers=bearer)).status == 200
    resp = await client.delete(f"/v1/tokens/{created['id']}", headers=auth("admin"))
    assert resp.status == 204
    assert (await client.get("/v1/audit", headers=bearer)).status == 401
    assert (await client.delete("/v1/tokens/999999", headers=auth("admin"))).status == 404


@pytest.mark.parametrize("role", ["engineer", "security", "proxy"])
async def test_only_admins_manage_tokens(client, auth, role):
    resp = await client.post("/v1/tokens", json={"name": "x", "role": "admin"}, headers=auth(role))
    assert resp.status == 403
    assert (await client.get("/v1/tokens", headers=auth(role))).status == 403
    assert (await client.delete("/v1/tokens/1", headers=auth(role))).status == 403
    assert (await client.get("/v1/tokens")).status == 401


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({"name": "x", "role": "root"}, "role", id="unknown role"),
        pytest.param({"name": "", "role": "admin"}, "name", id="empty name"),
        pytest.param({"name": "x", "role": "admin", "scope": "*"}, "scope", id="unknown field"),
    ],
)
async def test_bad_token_requests_are_422(client, auth, body, field):
    resp = await client.post("/v1/tokens", json=body, headers=auth("admin"))
    assert resp.status == 422
    assert (await resp.json())["errors"][0]["field"] == field
