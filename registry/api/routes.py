"""One declaration per route: method, path, roles, request and response models, handler.

A route module builds a `RouteTable` and declares each operation once, beside its handler:

    routes = RouteTable(tags=("recipients",))

    @routes.post("/v1/recipients", roles=AUTHORS, request=RecipientCreate,
                 response=RecipientOut, status=201, summary="Propose a recipient")
    async def create_recipient(request: web.Request) -> Reply:
        body = request_body(request, RecipientCreate)
        ...

`install(app, table)` is the only place that adds routes to the router: it wraps each handler
in its role check and request-body parsing, renders the returned model with the declared
status, and writes the operation into the OpenAPI document. So the path, the roles and the
models cannot disagree between the router, the check and the document.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel

from registry.models import ROLES
from registry.preconditions import IfMatch, parse_if_match
from sharewall.snapshot import SchemaModel

from . import keys, openapi
from .auth import PRINCIPAL, Principal, require_role
from .bodies import M, json_response, parse_json, read_body, read_json, validated

# `json`: a required JSON body validated by `request`; `optional`: same, but an empty body is
# None; `raw`: the handler reads the body itself (gzip uploads), `request` only documents it.
BodyKind = Literal["json", "optional", "raw"]


@dataclass(frozen=True)
class Reply:
    """A handler's answer when it needs more than the declared status: headers, another status.

    `etag` is the version the answer is at, sent as `ETag: "<version>"` (what `If-Match`
    names); only a route declared with `etag=` may set it, and such a route must on every 2xx.
    """

    body: BaseModel | None = None
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    etag: int | None = None


Result = BaseModel | Reply | web.StreamResponse
Handler = Callable[[web.Request], Awaitable[Result]]
Setup = Callable[[web.Application], None]

_BODY = web.RequestKey("sharewall_body", object)


@dataclass(frozen=True)
class Route:
    """One operation of the API: everything the router, the role check and OpenAPI need."""

    method: str
    path: str
    handler: Handler
    summary: str
    roles: tuple[str, ...] = ()
    request: openapi.Schema | None = None
    body: BodyKind = "json"
    max_body_bytes: int | Literal["upload"] | None = None
    request_content_type: str = "application/json"
    response: openapi.Schema | None = None
    response_content_type: str = "application/json"
    status: int = 200
    query: dict[str, tuple[dict[str, Any], str]] | None = None
    headers: dict[str, tuple[dict[str, Any], str]] | None = None
    responses: dict[int, str] | None = None
    tags: tuple[str, ...] = ()
    # What the `ETag` of every 2xx answer names (documented on each); None: no ETag.
    etag: str | None = None

    def __post_init__(self) -> None:
        unknown = set(self.roles) - set(ROLES)
        if unknown:  # a typo here would silently lock everyone out
            raise ValueError(f"{self.method} {self.path}: unknown roles {sorted(unknown)}")


class RouteTable:
    """The routes of one module, plus what they need set up on the app (hubs, jobs)."""

    def __init__(self, *, tags: tuple[str, ...] = ()) -> None:
        self.tags = tags
        self.routes: list[Route] = []
        self.setups: list[Setup] = []

    def route(self, method: str, path: str, **meta: Any) -> Callable[[Handler], Handler]:
        """Declare `handler` as `method path` with its metadata (see `Route`)."""

        def declare(handler: Handler) -> Handler:
            meta.setdefault("tags", self.tags)
            self.routes.append(Route(method.upper(), path, handler, **meta))
            return handler

        return declare

    def get(self, path: str, **meta: Any) -> Callable[[Handler], Handler]:
        return self.route("GET", path, **meta)

    def post(self, path: str, **meta: Any) -> Callable[[Handler], Handler]:
        return self.route("POST", path, **meta)

    def patch(self, path: str, **meta: Any) -> Callable[[Handler], Handler]:
        return self.route("PATCH", path, **meta)

    def delete(self, path: str, **meta: Any) -> Callable[[Handler], Handler]:
        return self.route("DELETE", path, **meta)

    def on_setup(self, setup: Setup) -> Setup:
        """Run `setup(app)` when the table is installed (app keys, cleanup contexts)."""
        self.setups.append(setup)
        return setup


def caller(request: web.Request) -> Principal:
    """The authenticated caller of a route declared with roles (checked before the handler)."""
    principal = request.get(PRINCIPAL)
    if principal is None:  # a handler of a public route asked: a programming error
        raise RuntimeError("caller() on a route without roles")
    return principal


def request_body(request: web.Request, model: type[M]) -> M:
    """The validated body of a route declared with `request=model`."""
    body = request[_BODY]
    if not isinstance(body, model):
        raise RuntimeError(f"route body is {type(body).__name__}, not {model.__name__}")
    return body


def if_match(request: web.Request) -> IfMatch | None:
    """The request's `If-Match` (`registry.preconditions`), None when absent; 400 if malformed."""
    lines = request.headers.getall("If-Match", None)
    return parse_if_match(", ".join(lines) if lines else None)


def optional_body(request: web.Request, model: type[M]) -> M | None:
    """The validated body of a route declared with `body="optional"`, None when empty."""
    body = request.get(_BODY)
    return body if isinstance(body, model) else None


async def _read(request: web.Request, route: Route) -> None:
    model = route.request
    if route.body == "raw" or not (
        isinstance(model, type) and issubclass(model, BaseModel | SchemaModel)
    ):
        return
    limit = route.max_body_bytes
    if limit == "upload":
        limit = keys.settings(request).max_upload_bytes
    if route.body == "json":
        request[_BODY] = await read_json(request, model, max_bytes=limit)
        return
    raw = await read_body(request, limit)
    if raw.strip():
        request[_BODY] = validated(model, parse_json(raw))


def _render(route: Route, result: Result) -> web.StreamResponse:
    if isinstance(result, web.StreamResponse):
        return result
    reply = result if isinstance(result, Reply) else Reply(body=result)
    status = reply.status or route.status
    headers = dict(reply.headers)
    # The document promises an ETag on the route's 2xx answers or none: answering otherwise
    # is our bug, not the client's.
    if "ETag" in headers or (reply.etag is not None and route.etag is None):
        raise TypeError(f"{route.method} {route.path}: an ETag the route does not declare")
    if reply.etag is not None:
        headers["ETag"] = f'"{reply.etag}"'
    elif route.etag is not None and status < 300:
        raise TypeError(f"{route.method} {route.path} answered {status} without its ETag")
    if reply.body is None:
        return web.Response(status=status, headers=headers)
    if status == 204:
        raise TypeError(f"{route.method} {route.path} answered 204 with a body")
    expected = route.response
    if isinstance(expected, type) and not isinstance(reply.body, expected):
        # The document promises `expected`; answering anything else is our bug, not the client's.
        raise TypeError(f"{route.method} {route.path} answered {type(reply.body).__name__}")
    return json_response(reply.body, status=status, headers=headers)


def _bind(route: Route) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        if route.roles:
            require_role(request, *route.roles)
        await _read(request, route)
        return _render(route, await route.handler(request))

    handle.__name__ = route.handler.__name__
    handle.__doc__ = route.handler.__doc__
    return handle


def install(app: web.Application, table: RouteTable) -> None:
    """Add a table's routes to the router and the OpenAPI document, and run its setups."""
    for setup in table.setups:
        setup(app)
    for route in table.routes:
        app.router.add_route(route.method, route.path, _bind(route))
        openapi.add_operation(app, route)
