"""The OpenAPI 3.1 document at `/openapi.json`, assembled from what each route module declares.

Each route module describes its operations next to their routes:

    openapi.add_path(app, "/v1/recipients", "post", summary="Propose a recipient",
                     roles=("engineer",), request=RecipientCreate, response=RecipientOut,
                     status=201)

Request/response models are pydantic classes (their JSON schemas go to
`components.schemas`) or plain JSON-schema dicts; query parameters are
`{name: (json_schema, description)}`; path parameters are found in the path.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from registry.errors import PROBLEM_CONTENT_TYPE

from . import keys

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

Schema = type[BaseModel] | dict[str, Any]


def new_document(title: str = "sharewall registry", version: str = "1") -> dict[str, Any]:
    """An empty document with the shared components (problem schema, bearer auth)."""
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": {},
        "components": {
            "schemas": {"Problem": _PROBLEM_SCHEMA},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _schema_ref(doc: dict[str, Any], schema: Schema) -> dict[str, Any]:
    if isinstance(schema, dict):
        return schema
    components = doc["components"]["schemas"]
    full = schema.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, sub in full.pop("$defs", {}).items():
        components.setdefault(name, sub)
    components.setdefault(schema.__name__, full)
    return {"$ref": f"#/components/schemas/{schema.__name__}"}


def _problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {PROBLEM_CONTENT_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }


def add_path(
    app: web.Application,
    path: str,
    method: str,
    *,
    summary: str,
    roles: tuple[str, ...] = (),
    request: Schema | None = None,
    request_content_type: str = "application/json",
    response: Schema | None = None,
    response_content_type: str = "application/json",
    status: int = 200,
    query: dict[str, tuple[dict[str, Any], str]] | None = None,
    headers: dict[str, tuple[dict[str, Any], str]] | None = None,
    responses: dict[int, str] | None = None,
    tags: tuple[str, ...] = (),
) -> None:
    """Declare one operation of the API in the app's OpenAPI document."""
    doc = app[keys.OPENAPI]
    op: dict[str, Any] = {"summary": summary, "operationId": _operation_id(method, path)}
    if tags:
        op["tags"] = list(tags)
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in _PATH_PARAM.findall(path)
    ]
    for name, (schema, description) in (query or {}).items():
        params.append({"name": name, "in": "query", "schema": schema, "description": description})
    for name, (schema, description) in (headers or {}).items():
        params.append({"name": name, "in": "header", "schema": schema, "description": description})
    if params:
        op["parameters"] = params
    if request is not None:
        op["requestBody"] = {
            "required": True,
            "content": {request_content_type: {"schema": _schema_ref(doc, request)}},
        }
    ok: dict[str, Any] = {"description": "OK" if status < 300 else "Done"}
    if response is not None:
        ok["content"] = {response_content_type: {"schema": _schema_ref(doc, response)}}
    op["responses"] = {str(status): ok}
    if request is not None:
        op["responses"]["400"] = _problem("Malformed JSON")
        op["responses"]["413"] = _problem("Body too large")
        op["responses"]["422"] = _problem("Invalid field (named in `errors`)")
    if roles:
        op["security"] = [{"bearer": []}]
        op["description"] = "Roles: " + ", ".join(roles) + "."
        op["responses"]["401"] = _problem("No or unknown bearer token")
        op["responses"]["403"] = _problem("Role not allowed")
    for code, description in (responses or {}).items():
        op["responses"][str(code)] = (
            _problem(description) if code >= 400 else {"description": description}
        )
    openapi_path = _PATH_PARAM.sub(r"{\1}", path)
    doc["paths"].setdefault(openapi_path, {})[method.lower()] = op


def _operation_id(method: str, path: str) -> str:
    words = [w for w in re.split(r"[^a-zA-Z0-9]+", _PATH_PARAM.sub(r"by_\1", path)) if w]
    return method.lower() + "_" + "_".join(words)


def document(app: web.Application) -> dict[str, Any]:
    """The complete document of `app`."""
    return app[keys.OPENAPI]
