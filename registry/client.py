"""The CLI's client of the registry API: one request helper, errors as `ApiError`."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson

from registry.errors import ApiError

TIMEOUT_S = 120.0


async def _request(
    url: str,
    token: str,
    method: str,
    path: str,
    *,
    body: Any = None,
    params: dict[str, str] | None = None,
) -> Any:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    data = orjson.dumps(body) if body is not None else None
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
    async with (
        aiohttp.ClientSession(timeout=timeout) as http,
        http.request(
            method, url.rstrip("/") + path, data=data, headers=headers, params=params
        ) as resp,
    ):
        payload = await resp.read()
        try:
            answer = orjson.loads(payload) if payload else {}
        except orjson.JSONDecodeError:
            answer = {}
        if resp.status >= 400:
            answer = answer if isinstance(answer, dict) else {}
            raise ApiError(
                resp.status,
                str(answer.get("type", "http-error")).rsplit("/", 1)[-1],
                str(answer.get("title", resp.reason)),
                answer.get("detail"),
            )
        return answer


def call_api(
    url: str,
    token: str,
    method: str,
    path: str,
    *,
    body: Any = None,
    params: dict[str, str] | None = None,
) -> Any:
    """One API call; the decoded JSON answer. Raises `ApiError` (HTTP error) or `OSError`."""
    try:
        return asyncio.run(_request(url, token, method, path, body=body, params=params))
    except aiohttp.ClientError as exc:
        raise OSError(str(exc) or type(exc).__name__) from None
    except TimeoutError:
        raise OSError(f"no answer within {TIMEOUT_S:.0f} s") from None
