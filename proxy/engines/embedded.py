"""The embedded engine: the regorus Rego interpreter evaluating `policies.rego/` in process."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import orjson
import regorus
import structlog

from proxy.engines.base import (
    DECISION_PATH,
    ENGINE_ERROR,
    ENGINE_UNDEFINED,
    SNAPSHOT_NOT_LOADED,
    EngineError,
)
from sharewall.policy import policy_data, policy_files
from sharewall.snapshot import Snapshot
from sharewall.taxonomy import policy_dir

__all__ = ["EmbeddedEngine", "policy_files"]

log = structlog.get_logger(__name__)

# regorus answers an undefined rule with this JSON string, not with an error.
_UNDEFINED = '"<undefined>"'


def _short(exc: BaseException) -> str:
    """First line of a regorus error: its messages carry a Rust backtrace after it."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


def _guarded(what: str, func: Any, *args: Any) -> Any:
    """Call regorus; translate whatever it raises (a `PanicException` is a BaseException)."""
    try:
        return func(*args)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # the one place regorus errors become EngineError
        raise EngineError(ENGINE_ERROR, f"{what}: {_short(exc)}") from None


def _data_json(snapshot: Snapshot, root: Path) -> str:
    """The engine's data document as JSON, taxonomy and registry in one document."""
    # regorus cannot merge two documents under one key, so taxonomy and registry go together.
    return orjson.dumps(policy_data(snapshot, root)).decode()


class EmbeddedEngine:
    """Evaluates the decision rule with regorus on the calling (event loop) thread.

    A regorus `Engine` may only be used from the thread that created it, so every engine is
    built lazily on the thread that first sets a snapshot; a call from another thread is an
    `engine_error`. A new snapshot is loaded into a clone of the policy-only engine and then
    swapped in with one reference assignment, so an evaluation never sees half a snapshot.
    """

    name = "embedded"

    def __init__(self, directory: Path | None = None) -> None:
        root = directory or policy_dir()
        self._policies = [(str(p), p.read_text()) for p in policy_files(root)]
        if not self._policies:
            raise EngineError(ENGINE_ERROR, f"no policy files under {root}")
        self._root = root
        # Parse once now so a broken policy fails at start-up, not on the first call.
        self._compile()
        self._base: regorus.Engine | None = None
        self._base_thread: int | None = None
        self._engine: regorus.Engine | None = None
        self._revision: str | None = None

    def _compile(self) -> regorus.Engine:
        engine = regorus.Engine()
        for path, text in self._policies:
            _guarded(f"load {path}", engine.add_policy, path, text)
        return engine

    @property
    def is_ready(self) -> bool:
        return self._engine is not None

    @property
    def revision(self) -> str | None:
        """Revision of the snapshot being evaluated against, if any."""
        return self._revision

    async def set_snapshot(self, snapshot: Snapshot) -> None:
        # The data document is built in a worker thread (~0.3 s at 10,000 recipients): only the
        # regorus calls stay on this thread, which the engines are bound to.
        document = await asyncio.to_thread(_data_json, snapshot, self._root)
        thread = threading.get_ident()
        if self._base is None or self._base_thread != thread:
            self._base, self._base_thread = self._compile(), thread
        engine = _guarded("clone", self._base.clone)
        _guarded("load snapshot", engine.add_data_json, document)
        self._engine, self._revision = engine, snapshot.revision
        log.info("engine.snapshot_loaded", engine=self.name, revision=snapshot.revision)

    async def evaluate(self, policy_input: dict[str, Any]) -> dict[str, Any]:
        return self.evaluate_sync(policy_input)

    def evaluate_sync(self, policy_input: dict[str, Any]) -> dict[str, Any]:
        """Evaluate on the current thread (the engine's thread); the async wrapper adds nothing."""
        engine = self._engine
        if engine is None:
            raise EngineError(SNAPSHOT_NOT_LOADED)
        try:
            payload = orjson.dumps(policy_input).decode()
        except TypeError as exc:
            raise EngineError(ENGINE_ERROR, f"input not JSON: {exc}") from None
        _guarded("set input", engine.set_input_json, payload)
        raw = _guarded("evaluate", engine.eval_rule_as_json, DECISION_PATH)
        if raw == _UNDEFINED:
            raise EngineError(ENGINE_UNDEFINED, DECISION_PATH)
        result = orjson.loads(raw)
        if not isinstance(result, dict):
            raise EngineError(
                ENGINE_UNDEFINED, f"decision is not an object: {type(result).__name__}"
            )
        return result

    async def close(self) -> None:
        self._engine = self._base = None
