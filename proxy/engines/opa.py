"""The OPA engine: an OPA server (normally the pod's sidecar) queried over its data API.

`POST /v1/data/sharewall/egress/decision` with `{"input": ...}` per call and
`PUT /v1/data/sharewall/registry` per snapshot, through the proxy's control-plane client.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import structlog

from proxy.control_client import ControlClient, ControlClientError, ControlResponse
from proxy.engines.base import (
    DECISION_PACKAGE,
    DECISION_RULE,
    ENGINE_ERROR,
    ENGINE_TIMEOUT,
    ENGINE_UNDEFINED,
    SNAPSHOT_NOT_LOADED,
    EngineError,
)
from sharewall.snapshot import Snapshot

log = structlog.get_logger(__name__)

REGISTRY_DATA_PATH = "/v1/data/sharewall/registry"
DECISION_DATA_PATH = "/v1/data/{}/{}".format(DECISION_PACKAGE.replace(".", "/"), DECISION_RULE)
# Answers worth one more try (OPA restarting, a proxy in front of it): as OPA's own clients do.
_RETRYABLE_STATUS = frozenset({502, 503, 504})


class _OpaStatus(Exception):
    def __init__(self, response: ControlResponse) -> None:
        super().__init__(f"HTTP {response.status}")
        self.status = response.status
        self.message = _opa_message(response)


def _opa_message(response: ControlResponse) -> str | None:
    """OPA's error body is `{"code": ..., "message": ...}`."""
    try:
        body = response.json()
    except ValueError:
        return None
    message = body.get("message") if isinstance(body, dict) else None
    return str(message)[:200] if message else None


def _translate(exc: BaseException, what: str) -> EngineError:
    """The one place transport and OPA errors become `EngineError`."""
    if isinstance(exc, TimeoutError):
        return EngineError(ENGINE_TIMEOUT, what)
    if isinstance(exc, _OpaStatus):
        detail = f"{what}: HTTP {exc.status}"
        return EngineError(ENGINE_ERROR, f"{detail}: {exc.message}" if exc.message else detail)
    return EngineError(ENGINE_ERROR, f"{what}: {type(exc).__name__}")


class OpaEngine:
    """Queries `data.sharewall.egress.decision` on an OPA server, bounded by `timeout` seconds.

    With `push_data` (the default) `set_snapshot` writes the snapshot to
    `data.sharewall.registry`; without it the OPA is expected to follow the registry's bundle
    and the snapshot only marks the engine ready. A refused connection or a 502/503/504 is
    tried `retries` more times within the same bound.
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
            # 8181 (OPA's) when the URL names no port.
            # Up to 32 kept-alive connections: one per call in flight is common under load.
            self._client = ControlClient(
                url, default_port=8181, connect_timeout=push_timeout, max_idle=32
            )
        except ValueError:
            raise ValueError(f"invalid OPA URL {url!r}") from None
        self.url = url
        self._timeout = timeout
        self._push_timeout = push_timeout
        self._push_data = push_data
        self._retries = retries
        self._revision: str | None = None

    @property
    def is_ready(self) -> bool:
        return self._revision is not None

    @property
    def revision(self) -> str | None:
        return self._revision

    async def _call(self, method: str, path: str, document: Any, expect: int) -> ControlResponse:
        """One request, retried on what a restarting OPA answers; `_OpaStatus` unless `expect`."""
        attempt = 0
        while True:
            try:
                response = await self._client.request(method, path, json=document)
            except (OSError, ssl.SSLError, ControlClientError):
                if attempt >= self._retries:
                    raise
            else:
                if response.status == expect:
                    return response
                if response.status not in _RETRYABLE_STATUS or attempt >= self._retries:
                    raise _OpaStatus(response)
            attempt += 1
            await asyncio.sleep(0.05 * attempt)

    async def set_snapshot(self, snapshot: Snapshot) -> None:
        if self._push_data:
            try:
                async with asyncio.timeout(self._push_timeout):
                    await self._call("PUT", REGISTRY_DATA_PATH, snapshot.policy_data(), 204)
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
                response = await self._call(
                    "POST", DECISION_DATA_PATH, {"input": policy_input}, 200
                )
                body = response.json()
        except Exception as exc:
            raise _translate(exc, "query") from None
        # OPA answers `{}` when the rule is undefined: a deny, never an allow.
        result = body.get("result") if isinstance(body, dict) else None
        if not isinstance(result, dict):
            raise EngineError(ENGINE_UNDEFINED, "OPA returned no decision")
        return result

    async def close(self) -> None:
        await self._client.close()
