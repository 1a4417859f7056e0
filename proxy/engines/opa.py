"""The OPA engine: an OPA server (normally the pod's sidecar) queried with opa-python-client's
`AsyncOpaClient`, as the design card says.

The client brings aiohttp (and requests, through the package's sync client): this module is
imported only when `--engine opa` builds the engine (`proxy.engines.create_engine`), so the
default embedded sidecar loads none of it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import structlog
from opa_client import AsyncOpaClient

from proxy.engines.base import (
    DECISION_PACKAGE,
    DECISION_RULE,
    ENGINE_ERROR,
    ENGINE_TIMEOUT,
    ENGINE_UNDEFINED,
    SNAPSHOT_NOT_LOADED,
    EngineError,
)
from sharewall.hosts import BadAuthority, parse_service_url
from sharewall.snapshot import Snapshot

log = structlog.get_logger(__name__)

OPA_PORT = 8181  # when the URL names no port
REGISTRY_DATA_PATH = "sharewall/registry"  # PUT /v1/data/sharewall/registry


def _translate(exc: BaseException, what: str) -> EngineError:
    """The one place opa-python-client and aiohttp errors become `EngineError`."""
    if isinstance(exc, TimeoutError):  # our bound, or the client's (aiohttp's) own
        return EngineError(ENGINE_TIMEOUT, what)
    if isinstance(exc, aiohttp.ClientResponseError):
        # `query_rule` raises aiohttp's raise_for_status(): the status and its reason phrase.
        return EngineError(ENGINE_ERROR, f"{what}: HTTP {exc.status} {exc.message}".rstrip())
    if isinstance(exc, aiohttp.ClientError):
        return EngineError(ENGINE_ERROR, f"{what}: {type(exc).__name__}")
    # opa_client's own errors (RegoParseError on a refused push, ...) carry OPA's `message`.
    message = getattr(exc, "message", None)
    detail = f"{type(exc).__name__}: {str(message)[:200]}" if message else type(exc).__name__
    return EngineError(ENGINE_ERROR, f"{what}: {detail}")


class OpaEngine:
    """Queries `data.sharewall.egress.decision` on an OPA server, bounded by `timeout` seconds.

    With `push_data` (the default) `set_snapshot` writes the snapshot to
    `data.sharewall.registry` (bounded by `push_timeout`); without it the OPA is expected to
    follow the registry's bundle and the snapshot only marks the engine ready. The client tries
    a refused connection or a 500/502/504 `retries` more times, within the same bound.
    """

    name = "opa"

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 0.5,
        push_data: bool = True,
        push_timeout: float = 10.0,
        retries: int = 1,
    ) -> None:
        try:
            target = parse_service_url(
                url if "://" in url else f"http://{url}", default_port=OPA_PORT
            )
        except BadAuthority:
            raise ValueError(f"invalid OPA URL {url!r}") from None
        if target.path != "/":
            # The client addresses OPA's API at the server's root (/v1/...).
            raise ValueError(f"invalid OPA URL {url!r}: OPA's API is at the root, no path")
        self.url = url
        self._timeout = timeout
        self._push_timeout = push_timeout
        self._push_data = push_data
        self._client = AsyncOpaClient(
            host=f"[{target.host}]" if ":" in target.host else target.host,
            port=target.port,
            ssl=target.scheme == "https",
            retries=retries,
            # The client's per-request bound must let a whole snapshot through; each call is
            # bounded by ours (asyncio.timeout), retries included: `timeout` for a query.
            timeout=max(timeout, push_timeout),
        )
        self._session_open = False
        self._revision: str | None = None

    @property
    def is_ready(self) -> bool:
        return self._revision is not None

    @property
    def revision(self) -> str | None:
        return self._revision

    async def _ensure_session(self) -> None:
        # The client's aiohttp session must be created inside the running loop.
        if not self._session_open:
            self._session_open = True
            await self._client.__aenter__()

    async def set_snapshot(self, snapshot: Snapshot) -> None:
        if self._push_data:
            try:
                async with asyncio.timeout(self._push_timeout):
                    await self._ensure_session()
                    await self._client.update_or_create_data(
                        snapshot.policy_data(), REGISTRY_DATA_PATH
                    )
            except Exception as exc:
                raise _translate(exc, "push snapshot") from None
        self._revision = snapshot.revision
        log.info(
            "engine.snapshot_loaded",
            engine=self.name,
            revision=snapshot.revision,
            pushed=self._push_data,
        )

    async def evaluate(self, policy_input: dict[str, Any]) -> dict[str, Any]:
        if self._revision is None:
            raise EngineError(SNAPSHOT_NOT_LOADED)
        try:
            async with asyncio.timeout(self._timeout):
                await self._ensure_session()
                body = await self._client.query_rule(policy_input, DECISION_PACKAGE, DECISION_RULE)
        except Exception as exc:
            raise _translate(exc, "query") from None
        # OPA answers `{}` when the rule is undefined: a deny, never an allow.
        result = body.get("result") if isinstance(body, dict) else None
        if not isinstance(result, dict):
            raise EngineError(ENGINE_UNDEFINED, "OPA returned no decision")
        return result

    async def close(self) -> None:
        if self._session_open:
            self._session_open = False
            await self._client.close_connection()
