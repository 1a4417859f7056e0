"""`/v1/tokens`: admins create (secret shown once), list, rotate and revoke tokens."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from aiohttp.test_utils import TestClient, TestServer
from structlog.testing import capture_logs

from registry.api.app import create_app
from registry.models import ApiToken
from registry.settings import Settings


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


# -- rotation: the old secret's grace -----------------------------------------------------------


async def new_token(client, auth, unique, role: str = "proxy") -> dict:
    resp = await client.post(
        "/v1/tokens", json={"name": unique("pod"), "role": role}, headers=auth("admin")
    )
    assert resp.status == 201
    return await resp.json()


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def rotate(client, auth, token_id: int, body: dict | None = None):
    kw = {"json": body} if body is not None else {}
    return await client.post(f"/v1/tokens/{token_id}/rotate", headers=auth("admin"), **kw)


async def test_a_rotated_secret_works_until_its_grace_ends_and_says_so(client, auth, unique):
    old = await new_token(client, auth, unique)
    before = datetime.now(UTC)
    resp = await rotate(client, auth, old["id"], {"grace_seconds": 600})
    assert resp.status == 201
    new = await resp.json()
    assert new["secret"] != old["secret"] and new["shipper_id"] == old["id"]
    assert (new["name"], new["role"], new["expires_at"]) == (old["name"], "proxy", None)
    previous = new["previous"]
    assert previous["id"] == old["id"] and previous["revoked_at"] is None
    expires = datetime.fromisoformat(previous["expires_at"])
    assert timedelta(seconds=599) <= expires - before <= timedelta(seconds=601)
    with capture_logs() as logs:
        answer = await client.get("/v1/snapshot", headers=bearer(old["secret"]))
        assert answer.status == 200  # the same identity and role, for now
        assert answer.headers["Sharewall-Token-Expires"] == expires.strftime("%Y-%m-%dT%H:%M:%SZ")
        refused = await client.get("/v1/tokens", headers=bearer(old["secret"]))
        assert refused.status == 403  # still a proxy token, and told so on a refusal too
        assert "Sharewall-Token-Expires" in refused.headers
    used = [e for e in logs if e["event"] == "token.deprecated_secret_used"]
    assert [(e["token_id"], e["path"]) for e in used] == [(old["id"], "/v1/snapshot")]
    assert used[0]["expires_at"] == expires.isoformat()
    assert not any(old["secret"] in repr(e) or new["secret"] in repr(e) for e in logs)
    answer = await client.get("/v1/snapshot", headers=bearer(new["secret"]))
    assert answer.status == 200 and "Sharewall-Token-Expires" not in answer.headers
    listed = await (await client.get("/v1/tokens", headers=auth("admin"))).json()
    mine = {t["id"]: t for t in listed["items"]}
    assert mine[old["id"]]["expires_at"] == previous["expires_at"]
    assert mine[new["id"]]["expires_at"] is None
    # A rotated token is rotated once; revoking it ends its grace at once.
    assert (await rotate(client, auth, old["id"])).status == 409
    assert (await client.delete(f"/v1/tokens/{old['id']}", headers=auth("admin"))).status == 204
    assert (await client.get("/v1/snapshot", headers=bearer(old["secret"]))).status == 401
    assert (await client.get("/v1/snapshot", headers=bearer(new["secret"]))).status == 200


async def test_a_secret_past_its_grace_is_refused(client, auth, unique, sessions):
    old = await new_token(client, auth, unique)
    new = await (await rotate(client, auth, old["id"])).json()  # the default grace: an hour
    expires = datetime.fromisoformat(new["previous"]["expires_at"])
    assert expires - datetime.now(UTC) > timedelta(minutes=59)
    assert (await client.get("/v1/snapshot", headers=bearer(old["secret"]))).status == 200
    async with sessions() as session, session.begin():  # the hour has passed
        await session.exec(
            sa.update(ApiToken)
            .where(ApiToken.id == old["id"])
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    resp = await client.get("/v1/snapshot", headers=bearer(old["secret"]))
    assert resp.status == 401
    assert "expired" in (await resp.json())["detail"]
    assert (await client.get("/v1/snapshot", headers=bearer(new["secret"]))).status == 200
    assert (await rotate(client, auth, old["id"])).status == 409


async def test_a_grace_of_zero_revokes_the_old_secret_at_once(client, auth, unique):
    old = await new_token(client, auth, unique, role="security")
    new = await (await rotate(client, auth, old["id"], {"grace_seconds": 0})).json()
    assert new["previous"]["revoked_at"] is not None
    assert (await client.get("/v1/audit", headers=bearer(old["secret"]))).status == 401
    assert (await client.get("/v1/audit", headers=bearer(new["secret"]))).status == 200
    audit = await client.get(
        "/v1/audit", params={"action": "token.rotate"}, headers=auth("security")
    )
    [event] = [e for e in (await audit.json())["items"] if e["entity_id"] == str(old["id"])]
    assert event["after"]["grace_seconds"] == 0 and event["after"]["id"] == new["id"]


@pytest.mark.parametrize(
    "grace",
    [
        pytest.param(-1, id="negative"),
        pytest.param(7 * 24 * 3600 + 1, id="over a week"),
        pytest.param("60", id="a string"),
        pytest.param(True, id="a boolean"),
        pytest.param(1.5, id="a fraction"),
    ],
)
async def test_a_grace_out_of_bounds_is_422_and_rotates_nothing(client, auth, unique, grace):
    old = await new_token(client, auth, unique)
    resp = await rotate(client, auth, old["id"], {"grace_seconds": grace})
    assert resp.status == 422
    assert (await resp.json())["errors"][0]["field"] == "grace_seconds"
    answer = await client.get("/v1/snapshot", headers=bearer(old["secret"]))
    assert answer.status == 200 and "Sharewall-Token-Expires" not in answer.headers


async def test_a_cached_lookup_does_not_stretch_the_grace(db_url, tokens, unique):
    """With the production token cache (a lookup trusted for a while), a secret is refused as
    soon as its grace ends, not a cache interval later."""
    app = create_app(Settings(db_url=db_url, token_cache_ttl_s=3600.0))
    admin = bearer(tokens["admin"])
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as client:
        created = await client.post(
            "/v1/tokens", json={"name": unique("pod"), "role": "proxy"}, headers=admin
        )
        old = await created.json()
        assert (await client.get("/v1/snapshot", headers=bearer(old["secret"]))).status == 200
        resp = await client.post(
            f"/v1/tokens/{old['id']}/rotate", json={"grace_seconds": 1}, headers=admin
        )
        expires = datetime.fromisoformat((await resp.json())["previous"]["expires_at"])
        # Looked up (and cached) with its expiry while the grace lasts ...
        assert (await client.get("/v1/snapshot", headers=bearer(old["secret"]))).status == 200
        while datetime.now(UTC) <= expires:
            await asyncio.sleep(0.05)
        # ... and refused once it ended, though the cache would trust it for an hour.
        assert (await client.get("/v1/snapshot", headers=bearer(old["secret"]))).status == 401


async def test_the_openapi_document_describes_the_grace_and_the_expiry_header(client):
    doc = await (await client.get("/openapi.json")).json()
    rotate = doc["paths"]["/v1/tokens/{token_id}/rotate"]["post"]
    assert rotate["requestBody"]["required"] is False
    body = doc["components"]["schemas"]["TokenRotate"]["properties"]["grace_seconds"]
    assert (body["default"], body["minimum"], body["maximum"]) == (3600, 0, 7 * 24 * 3600)
    created = rotate["responses"]["201"]
    assert created["content"]["application/json"]["schema"]["$ref"].endswith("/TokenRotated")
    header = {"$ref": "#/components/headers/Sharewall-Token-Expires"}
    assert created["headers"]["Sharewall-Token-Expires"] == header
    assert "Sharewall-Token-Expires" in doc["components"]["headers"]
    # Every authenticated operation may answer an expiring token, errors included (not 401).
    snapshot = doc["paths"]["/v1/snapshot"]["get"]["responses"]
    assert snapshot["403"]["headers"]["Sharewall-Token-Expires"] == header
    assert "headers" not in snapshot["401"]
