"""Reading JSON request bodies (bounded, validated) and writing JSON responses."""

from __future__ import annotations

import zlib
from typing import Any, TypeVar

import orjson
from aiohttp import web
from pydantic import BaseModel, ValidationError

from registry.errors import ApiError
from sharewall.snapshot import SchemaError, SchemaModel

from . import keys

# A request body: a pydantic model of the API's own, or an entry of the shared schema
# (`sharewall.snapshot`, msgspec), whose checks the YAML file and the proxy run too.
M = TypeVar("M", bound=BaseModel | SchemaModel)
_GZIP_MAGIC = b"\x1f\x8b"


def too_large(limit: int) -> ApiError:
    """413 naming the limit."""
    return ApiError(413, "payload-too-large", "Payload too large", f"the limit is {limit} bytes")


# Content-Encoding values inflated (zlib window bits: 31 gzip only, 15 the zlib format).
_INFLATE_WBITS = {"gzip": 31, "x-gzip": 31, "deflate": 15}
_CHUNK = 64 * 1024


def _malformed(encoding: str) -> ApiError:
    slug = "malformed-gzip" if "gzip" in encoding else "malformed-deflate"
    return ApiError(400, slug, f"Body is not valid {encoding}", "the compressed body is corrupt")


async def read_body(
    request: web.Request, max_bytes: int | None = None, *, max_raw_bytes: int | None = None
) -> bytes:
    """Read the body, refusing (413) more than `max_bytes` (default: the API body limit).

    Call it only once the caller is authenticated and authorised: nothing is read before.
    A `Content-Encoding: gzip` / `deflate` body is inflated here as it streams, with the cap
    applied to the inflated size (a gzip bomb is refused after `max_bytes + 1` bytes out,
    never inflated whole) and to the compressed size (`max_raw_bytes`, default `max_bytes`).
    Corrupt or truncated compressed data is 400; another encoding is 415.
    """
    limit = max_bytes if max_bytes is not None else keys.settings(request).max_body_bytes
    raw_limit = max_raw_bytes if max_raw_bytes is not None else limit
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity") and encoding not in _INFLATE_WBITS:
        raise ApiError(
            415,
            "unsupported-content-encoding",
            "Unsupported Content-Encoding",
            f"Content-Encoding {encoding[:40]!r} is not supported (gzip, deflate or none)",
        )
    if request.content_length is not None and request.content_length > raw_limit:
        raise too_large(raw_limit)
    inflater = zlib.decompressobj(_INFLATE_WBITS[encoding]) if encoding in _INFLATE_WBITS else None
    chunks: list[bytes] = []
    raw_size = size = 0
    async for chunk in request.content.iter_chunked(_CHUNK):
        raw_size += len(chunk)
        if raw_size > raw_limit:
            raise too_large(raw_limit)
        if inflater is not None:
            if inflater.eof:
                raise _malformed(encoding)  # data after the end of the compressed stream
            try:
                chunk = inflater.decompress(chunk, limit + 1 - size)
            except zlib.error:
                raise _malformed(encoding) from None
            if inflater.unconsumed_tail:  # more output than the limit allows
                raise too_large(limit)
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
    if inflater is not None and not inflater.eof:
        raise _malformed(encoding)  # truncated
    return b"".join(chunks)


def parse_json(raw: bytes) -> Any:
    """Decode JSON or raise a 400 problem."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(
            400, "malformed-json", "Request body is not valid JSON", f"at position {exc.pos}"
        ) from None


def validation_problem(exc: ValidationError | SchemaError) -> ApiError:
    """422 listing each invalid field by its dotted path."""
    found = (
        [(exc.loc, exc.message)]
        if isinstance(exc, SchemaError)
        else [(err["loc"], err["msg"].removeprefix("Value error, ")) for err in exc.errors()]
    )
    errors = [
        {"field": ".".join(str(p) for p in loc) or "(body)", "message": message}
        for loc, message in found
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
    return validated(model, parse_json(raw))


def validated(model: type[M], doc: Any) -> M:
    """`doc` validated into `model` (a 422 problem naming the field)."""
    try:
        if issubclass(model, SchemaModel):
            return model.from_data(doc)
        return model.model_validate(doc)
    except (ValidationError, SchemaError) as exc:
        raise validation_problem(exc) from None


def _default(obj: Any) -> Any:
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json", by_alias=True)
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

    `read_body` inflates a `Content-Encoding: gzip` body while it streams, counting the
    decompressed size; a body that is itself gzip data is inflated here, bounded too.
    """
    settings = keys.settings(request)
    limit = settings.max_decompressed_bytes
    raw = await read_body(request, limit, max_raw_bytes=settings.max_upload_bytes)
    if raw[:2] == _GZIP_MAGIC:
        raw = gunzip_bounded(raw, limit)
    if not raw.strip():
        raise ApiError(400, "malformed-json", "Request body is not valid JSON", "empty body")
    return parse_json(raw)
