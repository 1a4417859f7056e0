"""The OpenAPI 3.1 document at `/openapi.json`, written from the route declarations.

`registry.api.routes.install` calls `add_operation` for every declared `Route`, so the
document lists exactly what the router serves. Request/response models are pydantic classes
(their JSON schemas go to `components.schemas`) or plain JSON-schema dicts (binary bodies,
this document itself); query parameters are `{name: (json_schema, description)}`; path
parameters are found in the path.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from aiohttp import web
from pydantic import BaseModel

from registry.errors import PROBLEM_CONTENT_TYPE
from sharewall.snapshot import SchemaModel
from sharewall.token_expiry import TOKEN_EXPIRES_HEADER

from . import keys

if TYPE_CHECKING:
    from .routes import Route

_PATH_PARAM = re.compile(r"\{(\w+)(?::[^}]*)?\}")

_PROBLEM_SCHEMA = {
    "type": "object",
    "description": "RFC 9457 problem details; branch on `type`.",
    "properties": {
        "type": {"type": "string", "format": "uri"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
    "required": ["type", "title", "status"],
}

Schema = type[BaseModel] | type[SchemaModel] | dict[str, Any]

# On every answer to a request authenticated by a token that expires (`api.auth`).
_TOKEN_EXPIRES = {
    "description": "Only when the bearer token expires (a rotated token's old secret, in its "
    "grace): when it stops authenticating, RFC 3339 UTC (2026-11-30T09:00:00Z). Switch to "
    "the new secret before then.",
    "schema": {"type": "string", "format": "date-time"},
}


def new_document(title: str = "sharewall registry", version: str = "1") -> dict[str, Any]:
    """An empty document with the shared components (problem schema, bearer auth)."""
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": {},
        "components": {
            "schemas": {"Problem": _PROBLEM_SCHEMA},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "headers": {TOKEN_EXPIRES_HEADER: _TOKEN_EXPIRES},
        },
    }


def _schema_ref(doc: dict[str, Any], schema: Schema) -> dict[str, Any]:
    if isinstance(schema, dict):
        return schema
    components = doc["components"]["schemas"]
    if issubclass(schema, SchemaModel):
        full, defs = schema.json_schema("#/components/schemas/{name}")
    else:
        full = schema.model_json_schema(ref_template="#/components/schemas/{model}")
        defs = full.pop("$defs", {})
    for name, sub in defs.items():
        components.setdefault(name, sub)
    components.setdefault(schema.__name__, full)
    return {"$ref": f"#/components/schemas/{schema.__name__}"}


def _problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {PROBLEM_CONTENT_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }


def add_operation(app: web.Application, route: Route) -> None:
    """Write one declared route into the app's OpenAPI document."""
    doc = app[keys.OPENAPI]
    method, path = route.method.lower(), route.path
    op: dict[str, Any] = {"summary": route.summary, "operationId": _operation_id(method, path)}
    if route.tags:
        op["tags"] = list(route.tags)
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in _PATH_PARAM.findall(path)
    ]
    for name, (schema, description) in (route.query or {}).items():
        params.append({"name": name, "in": "query", "schema": schema, "description": description})
    for name, (schema, description) in (route.headers or {}).items():
        params.append({"name": name, "in": "header", "schema": schema, "description": description})
    if params:
        op["parameters"] = params
    if route.request is not None:
        op["requestBody"] = {
            "required": route.body != "optional",
            "content": {route.request_content_type: {"schema": _schema_ref(doc, route.request)}},
        }
    # The response model is the body of the route's 2xx answers; a 204 has none (a route
    # answering 204 or 202, say, documents its model on the 202).
    body = (
        {route.response_content_type: {"schema": _schema_ref(doc, route.response)}}
        if route.response is not None
        else None
    )
    ok: dict[str, Any] = {"description": "No content" if route.status == 204 else "OK"}
    if body is not None and route.status != 204:
        ok["content"] = body
    op["responses"] = {str(route.status): ok}
    if route.request is not None:
        op["responses"]["400"] = _problem("Malformed JSON")
        op["responses"]["413"] = _problem("Body too large")
        op["responses"]["422"] = _problem("Invalid field (named in `errors`)")
    if route.roles:
        op["security"] = [{"bearer": []}]
        op["description"] = "Roles: " + ", ".join(route.roles) + "."
        op["responses"]["401"] = _problem("No bearer token, or an unknown, revoked or expired one")
        op["responses"]["403"] = _problem("Role not allowed")
        op["responses"]["429"] = {
            **_problem(
                "Too many failed sign-ins from this address and this token is not valid "
                "(type too-many-sign-in-failures; a valid token still passes)"
            ),
            "headers": {
                "Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}
            },
        }
    if "If-Match" in (route.headers or {}):
        bad_if_match = "If-Match is not * nor a list of entity-tags (type bad-if-match)"
        op["responses"]["400"] = _problem(
            "Malformed JSON, or " + bad_if_match if route.request is not None else bad_if_match
        )
        op["responses"]["412"] = _problem(
            "If-Match names no current ETag: stale, or weak (W/ never matches; RFC 9110 "
            "§13.1.1 strong comparison) (type version-mismatch)"
        )
    for code, description in (route.responses or {}).items():
        if code >= 400:
            op["responses"][str(code)] = _problem(description)
            continue
        op["responses"][str(code)] = {"description": description}
        if body is not None and 200 <= code < 300 and code != 204:
            op["responses"][str(code)]["content"] = body
    if route.etag is not None:
        for code, response in op["responses"].items():
            if code.startswith("2"):
                response.setdefault("headers", {})["ETag"] = {
                    "description": route.etag,
                    "schema": {"type": "string"},
                }
    if route.roles:
        expires = {"$ref": f"#/components/headers/{TOKEN_EXPIRES_HEADER}"}
        for code, response in op["responses"].items():
            if code != "401":
                response.setdefault("headers", {})[TOKEN_EXPIRES_HEADER] = expires
    openapi_path = _PATH_PARAM.sub(r"{\1}", path)
    doc["paths"].setdefault(openapi_path, {})[method] = op


def _operation_id(method: str, path: str) -> str:
    words = [w for w in re.split(r"[^a-zA-Z0-9]+", _PATH_PARAM.sub(r"by_\1", path)) if w]
    return method.lower() + "_" + "_".join(words)


def document(app: web.Application) -> dict[str, Any]:
    """The complete document of `app`."""
    return app[keys.OPENAPI]
