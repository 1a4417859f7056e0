"""The policy engine interface shared by the embedded (regorus) and OPA engines."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from sharewall.snapshot import Snapshot

# The rule every engine evaluates (package `sharewall.egress`, rule `decision`).
DECISION_PACKAGE = "sharewall.egress"
DECISION_RULE = "decision"
DECISION_PATH = f"data.{DECISION_PACKAGE}.{DECISION_RULE}"

# EngineError codes; each one becomes `Decision.fault` (answered 503, never an allow).
ENGINE_TIMEOUT = "engine_timeout"
ENGINE_ERROR = "engine_error"
ENGINE_UNDEFINED = "engine_undefined"
SNAPSHOT_NOT_LOADED = "snapshot_not_loaded"


class EngineError(Exception):
    """A policy engine could not produce a decision; `code` is one of the codes above."""

    def __init__(self, code: str, detail: str = "") -> None:
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code
        self.detail = detail


@runtime_checkable
class PolicyEngine(Protocol):
    """Evaluates `data.sharewall.egress.decision` for one policy input against a snapshot."""

    name: str

    @property
    def is_ready(self) -> bool:
        """True once policies are loaded and a snapshot has been set."""
        ...

    async def set_snapshot(self, snapshot: Snapshot) -> None:
        """Make `snapshot` the registry data every later evaluation sees (atomically)."""
        ...

    async def evaluate(self, policy_input: dict[str, Any]) -> dict[str, Any]:
        """Return the raw decision document; raise `EngineError` when there is none."""
        ...

    async def close(self) -> None:
        """Release the engine's resources (sessions, threads)."""
        ...
