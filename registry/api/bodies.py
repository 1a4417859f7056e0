"""Reading JSON request bodies (bounded, validated) and writing JSON responses."""

from __future__ import annotations

import zlib
from typing import Any, TypeVar

import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from pydantic import BaseModel, ValidationError

from registry.errors import ApiError

from . import keys

M = TypeVar("M", bound=BaseModel)
_GZIP_MAGIC = b"\x1f\x8b"


def too_large(limit: int) -> ApiError:
    """413 naming the limit."""
    return ApiError(413, "payload-too-large", "Payload too large", f"the limit is {limit} bytes")


async def read_body(request: web.Request, max_bytes: int | None = None) -> bytes:
    """Read the raw body, refusing (413) more than `max_bytes` (default: the API body limit)."""
    limit = max_bytes if max_bytes is not None else keys.settings(request).max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json(raw: bytes) -> Any:
    """Decode JSON or raise a 400 problem."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(
            400, "malformed-json", "Request body is not valid JSON", f"at position {exc.pos}"
        ) from None


def validation_problem(exc: ValidationError) -> ApiError:
    """422 listing each invalid field by its dotted path."""
    errors = [
        {
            "field": ".".join(str(p) for p in err["loc"]) or "(body)",
            "message": err["msg"].removeprefix("Value error, "),
        }
        for err in exc.errors()
    ]
    first = errors[0]
    return ApiError(
        422,
        "validation-error",
        "Request body is not valid",
        f"{first['field']}: {first['message']}",
        {"errors": errors},
    )


async def read_json(request: web.Request, model: type[M], *, max_bytes: int | None = None) -> M:
    """Read, decode and validate a JSON body into `model` (400 / 413 / 422 problems)."""
    raw = await read_body(request, max_bytes)
    if not raw.strip():
        raise ApiError(400, "malformed-json", "Request body is not valid JSON", "empty body")
    doc = parse_json(raw)
    try:
        return model.model_validate(doc)
    except ValidationError as exc:
        raise validation_problem(exc) from None


def _default(obj: Any) -> Any:
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
    if isinstance(obj, set | frozenset | tuple):
        return list(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def dumps(data: Any) -> bytes:
    """orjson with pydantic models and sets."""
    return orjson.dumps(data, default=_default, option=orjson.OPT_NON_STR_KEYS)


def json_response(
    data: Any, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """A JSON response (orjson: datetimes as ISO 8601)."""
    return web.Response(
        body=dumps(data), status=status, content_type="application/json", headers=headers
    )


def gunzip_bounded(raw: bytes, limit: int) -> bytes:
    """Decompress a gzip body, refusing (413) more than `limit` bytes out (a gzip bomb)."""
    inflater = zlib.decompressobj(wbits=31)
    try:
        out = inflater.decompress(raw, limit + 1)
    except zlib.error:
        raise ApiError(400, "malformed-gzip", "Body is not valid gzip") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise too_large(limit)
    return out


async def read_upload(request: web.Request) -> Any:
    """Read a JSON upload, plain or gzip (by `Content-Encoding` or by its magic bytes), bounded.

    aiohttp inflates a `Content-Encoding: gzip` body while it streams, so the decompressed size
    is what `read_body` counts; a body that is itself gzip data is inflated here, bounded too.
    """
    limit = keys.settings(request).max_decompressed_bytes
    try:
        raw = await read_body(request, limit)
    except HttpProcessingError:
        raise ApiError(400, "malformed-gzip", "Body is not valid gzip") from None
    if raw[:2] == _GZIP_MAGIC:
        raw = gunzip_bounded(raw, limit)
    if not raw.strip():
        raise ApiError(400, "malformed-json", "Request body is not valid JSON", "empty body")
    return parse_json(raw)
