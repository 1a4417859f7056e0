"""The Rego policy evaluated in process (regorus): what the proxy's embedded engine loads, and a
plain synchronous evaluator for one snapshot (the registry's impact replay uses it).

A regorus `Engine` may only be used from the thread that created it: build an evaluator on the
thread that will call it (e.g. inside `asyncio.to_thread`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import regorus

from sharewall.snapshot import Snapshot
from sharewall.taxonomy import TAXONOMY_RELPATH, policy_dir

DECISION_RULE = "data.sharewall.egress.decision"


class PolicyError(Exception):
    """The policy could not be loaded or evaluated (a fault, never a decision)."""


def policy_files(directory: Path | None = None) -> list[Path]:
    """The policy files an engine loads: every `*.rego` under `policies.rego/` but the tests."""
    root = directory or policy_dir()
    return sorted(p for p in root.rglob("*.rego") if not p.name.endswith("_test.rego"))


def policy_data(snapshot: Snapshot, directory: Path | None = None) -> dict[str, Any]:
    """The data document of the policy: taxonomy and registry under `sharewall`."""
    taxonomy = orjson.loads(((directory or policy_dir()) / TAXONOMY_RELPATH).read_bytes())
    return {"sharewall": {"taxonomy": taxonomy, "registry": snapshot.policy_data()}}


class PolicyEvaluator:
    """Evaluates the decision rule against one snapshot, on the thread that built it."""

    def __init__(self, snapshot: Snapshot, directory: Path | None = None) -> None:
        engine = regorus.Engine()
        try:
            for path in policy_files(directory):
                engine.add_policy(str(path), path.read_text())
            engine.add_data_json(orjson.dumps(policy_data(snapshot, directory)).decode())
        except BaseException as exc:  # regorus panics are BaseExceptions
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            message = f"load: {str(exc).strip().splitlines()[0]}"
        else:
            self._engine = engine
            return
        # The error outlives this call (the impact replay hands it from its worker thread to
        # the loop): raised without a frame holding the engine, which is released here, on the
        # thread that built it (pyo3 refuses to drop it on another one).
        del engine
        raise PolicyError(message)

    def decide(self, policy_input: dict[str, Any]) -> dict[str, Any]:
        """The decision document (`allow`, `action`, `reasons`) of one policy input."""
        try:
            self._engine.set_input_json(orjson.dumps(policy_input).decode())
            raw = self._engine.eval_rule_as_json(DECISION_RULE)
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            raise PolicyError(f"evaluate: {str(exc).strip().splitlines()[0]}") from None
        result = orjson.loads(raw)
        if not isinstance(result, dict) or not isinstance(result.get("reasons"), list):
            raise PolicyError("the decision rule is undefined or not an object")
        return result
