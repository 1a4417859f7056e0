"""Policy engines behind one async interface: `embedded` (regorus, default) and `opa`."""

from __future__ import annotations

from proxy.engines.base import (
    ENGINE_ERROR,
    ENGINE_TIMEOUT,
    ENGINE_UNDEFINED,
    SNAPSHOT_NOT_LOADED,
    EngineError,
    PolicyEngine,
)

ENGINE_KINDS = ("embedded", "opa")


def create_engine(
    kind: str, *, opa_url: str | None = None, timeout: float = 0.5, push_data: bool = True
) -> PolicyEngine:
    """Build the engine named `kind`; `opa` needs `opa_url`."""
    if kind == "embedded":
        from proxy.engines.embedded import EmbeddedEngine

        return EmbeddedEngine()
    if kind == "opa":
        if not opa_url:
            raise ValueError("the opa engine needs an OPA URL (--opa-url)")
        from proxy.engines.opa import OpaEngine

        return OpaEngine(opa_url, timeout=timeout, push_data=push_data)
    raise ValueError(f"unknown engine {kind!r}; expected one of {', '.join(ENGINE_KINDS)}")


__all__ = [
    "ENGINE_ERROR",
    "ENGINE_KINDS",
    "ENGINE_TIMEOUT",
    "ENGINE_UNDEFINED",
    "SNAPSHOT_NOT_LOADED",
    "EngineError",
    "PolicyEngine",
    "create_engine",
]
