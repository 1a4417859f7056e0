"""The app skeleton: problem+json errors, authentication, the OpenAPI document."""

from __future__ import annotations

import pytest

PROBLEM = "application/problem+json"


async def test_openapi_document_is_served_without_a_token(client):
    resp = await client.get("/openapi.json")
    assert resp.status == 200
    doc = await resp.json()
    assert doc["openapi"].startswith("3.")
    assert "/healthz" in doc["paths"]


async def test_unknown_route_is_a_problem_document(client):
    resp = await client.get("/v1/nope")
    assert resp.status == 404
    assert resp.content_type == PROBLEM
    body = await resp.json()
    assert body["type"] == "https://sharewall.dev/problems/not-found"
    assert body["status"] == 404


@pytest.mark.parametrize(
    "header",
    [
        pytest.param("Bearer sw_not-a-token", id="unknown token"),
        pytest.param("Basic dXNlcjpwYXNz", id="wrong scheme"),
        pytest.param("Bearer ", id="empty token"),
    ],
)
async def test_bad_credentials_are_401_with_bearer_challenge(client, header):
    resp = await client.get("/healthz", headers={"Authorization": header})
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert (await resp.json())["type"].endswith("/unauthorized")


async def test_valid_token_passes_and_request_id_is_echoed(client, auth):
    resp = await client.get("/readyz", headers={**auth("admin"), "X-Request-Id": "abc-123"})
    assert resp.status == 200
    assert resp.headers["X-Request-Id"] == "abc-123"
