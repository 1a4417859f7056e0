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


CORE_PREFIXES = ("/v1/recipients", "/v1/tokens", "/v1/audit", "/v1/apply", "/openapi", "/healthz")


async def test_every_core_route_is_in_the_openapi_document(client):
    doc = await (await client.get("/openapi.json")).json()
    routes = {
        (route.resource.canonical, route.method.lower())
        for route in client.server.app.router.routes()
        if route.method != "HEAD" and route.resource.canonical.startswith(CORE_PREFIXES)
    }
    assert len(routes) >= 15
    missing = {(p, m) for p, m in routes if m not in doc["paths"].get(p, {})}
    assert missing == set()
    approve = doc["paths"]["/v1/recipients/{id}/approve"]["post"]
    assert {"401", "403", "404"} <= set(approve["responses"])
    assert "RecipientCreate" in doc["components"]["schemas"]


async def test_each_request_is_logged_once_with_its_status(client, auth):
    from structlog.testing import capture_logs

    with capture_logs() as logs:
        await client.get("/v1/recipients/nope", headers=auth("engineer"))
    lines = [e for e in logs if e["event"] == "api.request"]
    assert [(e["method"], e["path"], e["status"]) for e in lines] == [
        ("GET", "/v1/recipients/nope", 404)
    ]


async def test_database_down_is_503_problem_not_500():
    from aiohttp.test_utils import TestClient, TestServer

    from registry.api.app import create_app
    from registry.settings import Settings

    # Port 1 on loopback: nothing listens, the connection is refused at once.
    settings = Settings(db_url="postgresql+asyncpg://postgres@127.0.0.1:1/none")
    async with TestClient(TestServer(create_app(settings), host="127.0.0.1", port=0)) as client:
        resp = await client.get("/readyz")
        assert resp.status == 503
        resp = await client.get("/v1/recipients", headers={"Authorization": "Bearer sw_x"})
        assert resp.status == 503
        body = await resp.json()
        assert body["type"] == "https://sharewall.dev/problems/database-unavailable"
        assert "127.0.0.1" not in str(body)  # no internals leak
        assert (await client.get("/healthz")).status == 200


async def test_openapi_document_is_valid_openapi_3_1(client):
    from openapi_spec_validator import validate

    doc = await (await client.get("/openapi.json")).json()
    validate(doc)  # raises on any structural error, for every module's paths


async def test_each_route_is_declared_once_and_documented_with_its_roles(client):
    """Router, role check and document come from one declaration: they list the same routes."""
    from registry.api.app import ROUTE_TABLES

    doc = await (await client.get("/openapi.json")).json()
    declared = {
        (route.path.replace("{id}", "{id}"), route.method.lower(), route.roles)
        for table in ROUTE_TABLES
        for route in table.routes
    }
    served = {
        (r.resource.canonical, r.method.lower())
        for r in client.server.app.router.routes()
        # The console's pages (/, /ui/...) are HTML, not API operations.
        if r.method != "HEAD"
        and not r.resource.canonical.startswith(("/ui", "/static"))
        and r.resource.canonical != "/"
    }
    assert {(p, m) for p, m, _ in declared} == served
    assert len(declared) == len(served)  # no route declared twice
    for path, method, roles in declared:
        op = doc["paths"][path][method]
        if roles:
            assert op["description"] == "Roles: " + ", ".join(roles) + "."
        else:
            assert "security" not in op


async def test_declared_roles_are_enforced_before_the_handler(client, auth):
    # /v1/tokens is admin only; an engineer is refused without touching the handler.
    resp = await client.post(
        "/v1/tokens", json={"name": "x", "role": "admin"}, headers=auth("engineer")
    )
    assert resp.status == 403
    assert (await resp.json())["type"].endswith("/forbidden-role")


def test_a_route_with_an_unknown_role_is_refused_at_declaration():
    from registry.api.routes import RouteTable

    table = RouteTable()
    with pytest.raises(ValueError, match="unknown roles"):

        @table.get("/v1/x", summary="x", roles=("secruity",))
        async def handler(request):  # pragma: no cover - never called
            raise AssertionError


# Deleting the resource itself leaves no version to name.
_GONE = {("/v1/recipients/{id}", "delete"), ("/v1/workloads/{namespace}/{name}", "delete")}


async def test_every_if_match_write_documents_the_etag_it_answers(client):
    """A client continuing an If-Match chain finds the new ETag on every success answer, and
    the document says what a stale (412) or malformed (400) If-Match gets."""
    doc = await (await client.get("/openapi.json")).json()
    checked = []
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            names = {p["name"] for p in op.get("parameters", []) if p["in"] == "header"}
            if "If-Match" not in names or (path, method) in _GONE:
                continue
            assert {"400", "412"} <= set(op["responses"]), (method, path)
            for code, response in op["responses"].items():
                if code.startswith("2"):
                    assert "ETag" in response.get("headers", {}), (method, path, code)
                    checked.append((method, path, code))
    assert ("delete", "/v1/recipients/{id}/grants/{gid}", "204") in checked
    assert ("delete", "/v1/recipients/{id}/grants/{gid}", "202") in checked
    assert ("post", "/v1/recipients/{id}/grants/{gid}/revoke", "200") in checked


async def test_a_204_is_documented_without_a_body(client):
    """A 204 has no content; the model of a route answering 204 or 202 goes on the 202."""
    doc = await (await client.get("/openapi.json")).json()
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            assert "content" not in op["responses"].get("204", {}), (method, path)
    staged = doc["paths"]["/v1/recipients/{id}/grants/{gid}"]["delete"]["responses"]["202"]
    schema = staged["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/RecipientOut"}


async def test_authenticated_routes_document_the_sign_in_throttle(client):
    doc = await (await client.get("/openapi.json")).json()
    approve = doc["paths"]["/v1/recipients/{id}/approve"]["post"]["responses"]
    assert approve["429"]["content"]["application/problem+json"]
    assert "Retry-After" in approve["429"]["headers"]
    assert "429" not in doc["paths"]["/healthz"]["get"]["responses"]
