"""Request-id binding and the one place where errors become problem+json responses."""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable

import orjson
import structlog
from aiohttp import web
from pydantic import ValidationError
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, OperationalError

from registry.errors import PROBLEM_CONTENT_TYPE, ApiError
from sharewall.snapshot import SchemaError

from .bodies import validation_problem

log = structlog.get_logger("registry.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_HTTP_SLUGS = {
    400: "bad-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    406: "not-acceptable",
    413: "payload-too-large",
    415: "unsupported-media-type",
}


def problem_response(error: ApiError, request: web.Request) -> web.Response:
    """Render `error` as an RFC 9457 response."""
    resp = web.Response(
        status=error.status,
        body=orjson.dumps(error.to_problem(instance=request.path)),
        content_type=PROBLEM_CONTENT_TYPE,
    )
    for name, value in error.headers.items():
        resp.headers[name] = value
    return resp


def _from_http_exception(exc: web.HTTPException) -> ApiError:
    slug = _HTTP_SLUGS.get(exc.status, f"http-{exc.status}")
    headers = {}
    if "Allow" in exc.headers:
        headers["Allow"] = exc.headers["Allow"]
    return ApiError(exc.status, slug, exc.reason, None, headers=headers)


@web.middleware
async def request_context_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Bind a request id (the client's `X-Request-Id` when sane) to every log line of the call."""
    request_id = request.headers.get("X-Request-Id", "")
    if not (0 < len(request_id) <= 64 and request_id.isascii() and request_id.isprintable()):
        request_id = uuid.uuid4().hex
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=request_id)
    started = time.perf_counter()
    response = await handler(request)
    response.headers["X-Request-Id"] = request_id
    # One line per call (the canonical access log); the query string may carry filter values
    # but never secrets, and bodies are never logged.
    log.info(
        "api.request",
        method=request.method,
        path=request.path,
        status=response.status,
        duration_ms=round((time.perf_counter() - started) * 1000, 2),
    )
    return response


# PostgreSQL's transient failures of one transaction (deadlock_detected,
# serialization_failure, lock_not_available: a lock not granted within `lock_timeout`,
# query_canceled: a `statement_timeout` an operator set): the database is up; the same
# write may succeed when sent again. The registry's own writers take the registry_state row
# first and do not deadlock each other; this is for a session outside it (an operator's
# psql) locking rows, or a writer stuck while holding the registry_state row.
_TRANSIENT_SQLSTATES = frozenset({"40P01", "40001", "55P03", "57014"})


def _is_busy(exc: Exception) -> bool:
    """The database is up, only busy: SQLite's writer lock held past the busy timeout, or a
    PostgreSQL transaction aborted by a deadlock, a serialization failure or a lock wait
    past `lock_timeout`."""
    if not isinstance(exc, DBAPIError):
        return False
    if getattr(exc.orig, "sqlstate", None) in _TRANSIENT_SQLSTATES:
        return True
    return isinstance(exc, OperationalError) and "database is locked" in str(exc.orig)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Translate every failure (ours, aiohttp's, pydantic's, SQLAlchemy's) into problem+json."""
    try:
        return await handler(request)
    except ApiError as exc:
        error = exc
    except (ValidationError, SchemaError) as exc:
        error = validation_problem(exc)
    except IntegrityError:
        # A constraint the service did not pre-check (a concurrent insert won the race).
        log.info("api.integrity_conflict", path=request.path)
        error = ApiError(409, "conflict", "Conflict", "the change conflicts with existing data")
    except DataError:
        # A value the validation let through but the column cannot hold (a backstop).
        log.warning("api.data_error", path=request.path)
        error = ApiError(
            422, "validation-error", "Request body is not valid", "a value is too large"
        )
    except (DBAPIError, ConnectionError) as exc:
        if _is_busy(exc):
            log.warning(
                "api.database_busy",
                path=request.path,
                sqlstate=getattr(getattr(exc, "orig", None), "sqlstate", None),
            )
            error = ApiError(
                503,
                "database-busy",
                "Database busy",
                "another write held the database too long or deadlocked with it; retry",
                headers={"Retry-After": "1"},
            )
        else:
            log.exception("api.database_error", path=request.path, error=type(exc).__name__)
            error = ApiError(503, "database-unavailable", "Database unavailable")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        error = _from_http_exception(exc)
    except Exception:
        log.exception("api.unhandled_error", path=request.path, method=request.method)
        error = ApiError(500, "internal-error", "Internal server error")
    if error.status >= 500:
        log.warning("api.problem", status=error.status, type=error.type_slug)
    return problem_response(error, request)
