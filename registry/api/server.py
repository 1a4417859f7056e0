"""The registry's HTTP server: aiohttp's, with its own low-level errors as problem+json.

aiohttp answers a request it cannot parse (a bad request line, oversized headers, a broken
chunked body) itself, before any middleware runs, in `text/plain`. The runner below makes
those answers RFC 9457 documents like every other error of the API.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from registry.errors import PROBLEM_CONTENT_TYPE, ApiError

_DETAILS = {
    400: "the request is not valid HTTP/1.1",
    413: "the request is too large",
    431: "the request's header fields are too large",
}


def low_level_problem(status: int) -> web.Response:
    """The problem+json answer to a request aiohttp refused while parsing it."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    slug = "bad-request" if status == 400 else phrase.lower().replace(" ", "-")
    if status >= 500:
        slug, phrase = "internal-error", "Internal server error"
    error = ApiError(status, slug, phrase, _DETAILS.get(status))
    resp = web.Response(
        status=status, body=orjson.dumps(error.to_problem()), content_type=PROBLEM_CONTENT_TYPE
    )
    resp.force_close()
    return resp


class _ProblemRequestHandler(RequestHandler):
    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        # The parent logs the error and refuses when a response was already started.
        super().handle_error(request, status, exc, message)
        return low_level_problem(status)


class _ProblemServer(web.Server):
    def __call__(self) -> RequestHandler:
        return _ProblemRequestHandler(self, loop=self._loop, **self._kwargs)


class RegistryRunner(web.AppRunner):
    """`web.AppRunner` whose connections answer aiohttp's own errors as problem+json."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _ProblemServer  # same object and state, one method overridden
        return server
