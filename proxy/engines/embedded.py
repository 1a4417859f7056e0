"""The embedded engine: the regorus Rego interpreter evaluating `policies.rego/` in process."""

from __future__ import annotations

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
from sharewall.policy import policy_files
from sharewall.slices import each_in_slices
from sharewall.snapshot import Recipient, Snapshot, policy_data_of
from sharewall.taxonomy import TAXONOMY_RELPATH, policy_dir

__all__ = ["EmbeddedEngine", "policy_files"]

log = structlog.get_logger(__name__)

# regorus answers an undefined rule with this JSON string, not with an error.
_UNDEFINED = '"<undefined>"'

# A regorus `Engine` is a pyo3 `unsendable` class: released off the thread that built it, it is
# leaked with "Engine is unsendable, but is being dropped on another thread" on stderr. The
# engines of an `EmbeddedEngine` freed on another thread (by the cyclic GC, which runs on
# whichever thread allocates, e.g. an `asyncio.to_thread` worker) wait here, by owning thread,
# until that thread lets them go (`_release_stranded`).
_STRANDED: dict[int, list[regorus.Engine]] = {}


def _strand(owner: int | None, *engines: regorus.Engine | None) -> None:
    """Keep `engines` of thread `owner` for it to release, unless this is that thread."""
    if owner is None or owner == threading.get_ident():
        return
    _STRANDED.setdefault(owner, []).extend(e for e in engines if e is not None)


def _release_stranded() -> None:
    """Let go of this thread's stranded engines (here, where they were built)."""
    _STRANDED.pop(threading.get_ident(), None)


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


# Past this many distinct recipients asked about, the engine holds every recipient (an egress
# gateway): adding one more to a working set means reloading the set (regorus cannot replace a
# key of a loaded document), ~0.01 ms per recipient; the whole of 10,000 is ~80 ms.
WORKING_SET_LIMIT = 256


def _detached(func: Any, *args: Any) -> Any:
    """`func(*args)`; an `EngineError` it raises is raised again as a copy without traceback.

    The traceback's frames hold regorus engines (`engine` locals, bound methods), and an error
    outlives the call: logged, kept by a task, freed by another thread or by the cyclic GC
    running on whichever thread allocates (an `asyncio.to_thread` worker). An `Engine` is a
    pyo3 `unsendable` class: released off its own thread it is leaked with "Engine is
    unsendable, but is being dropped on another thread" on stderr. Here the original error, and
    with it those frames, is released on this thread before the copy leaves.
    """
    try:
        return func(*args)
    except EngineError as exc:
        error = EngineError(exc.code, exc.detail)
    raise error


class EmbeddedEngine:
    """Evaluates the decision rule with regorus on the calling (event loop) thread.

    A regorus `Engine` may only be used from the thread that created it, so every engine is
    built lazily on the thread that first sets a snapshot; a call from another thread is an
    `engine_error`. A snapshot is loaded into a clone of the policy-only engine and then
    swapped in with one reference assignment, so an evaluation never sees half a snapshot.

    The engine's `data.sharewall.registry.recipients` holds the recipients decisions have been
    asked about (the working set), not all of them: the policy reads that object only at
    `input.recipient_id`, so a decision is the same as against the whole registry, and a
    snapshot of 10,000 recipients loads in well under a millisecond instead of ~80 ms on the
    loop. A call about a recipient outside the set reloads the set with it first. Above
    `WORKING_SET_LIMIT` recipients every recipient is loaded.
    """

    name = "embedded"

    def __init__(self, directory: Path | None = None) -> None:
        root = directory or policy_dir()
        self._policies = [(str(p), p.read_text()) for p in policy_files(root)]
        if not self._policies:
            raise EngineError(ENGINE_ERROR, f"no policy files under {root}")
        self._root = root
        # Compiled now so a broken policy fails at start-up, not on the first call; kept as the
        # base of the first snapshot when that is set on this thread (the proxy's loop).
        self._base: regorus.Engine | None = _detached(self._compile)
        self._base_thread: int | None = threading.get_ident()
        self._engine: regorus.Engine | None = None
        self._revision: str | None = None
        self._taxonomy = orjson.loads((root / TAXONOMY_RELPATH).read_bytes())
        self._snapshot: Snapshot | None = None
        self._by_id: dict[str, Recipient] = {}
        self._working: set[str] = set()  # recipient ids decisions asked about
        self._loaded: set[str] | None = None  # ids in the current engine's data (None: all)
        self._forms: dict[str, tuple[Recipient, dict[str, Any]]] = {}  # id → (recipient, form)

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
        # Indexing 10,000 recipients by id is ~5-15 ms on a busy heap: done in slices, the
        # engine evaluating against the previous snapshot meanwhile (swapped in one go below).
        by_id: dict[str, Recipient] = {}
        await each_in_slices(snapshot.recipients, lambda r: by_id.__setitem__(r.id, r))
        # The working set's Rego forms too (up to 256 `to_data()`s, ~10-25 us each: every
        # recipient of a reloaded file is a new object), so that the swap only loads them.
        if len(self._working) <= WORKING_SET_LIMIT:
            wanted = [by_id[rid] for rid in self._working if rid in by_id]
            await each_in_slices(wanted, self._form)
        _detached(self._set_snapshot, snapshot, by_id)

    def _set_snapshot(self, snapshot: Snapshot, by_id: dict[str, Recipient]) -> None:
        thread = threading.get_ident()
        _release_stranded()
        if self._base is None or self._base_thread != thread:
            # The old thread's engines are its to release, not this one's.
            _strand(self._base_thread, self._base, self._engine)
            self._engine = None
            self._base, self._base_thread = self._compile(), thread
        everything = len(self._working) > WORKING_SET_LIMIT
        loaded = None if everything else {rid for rid in self._working if rid in by_id}
        engine = self._load(snapshot, by_id, loaded)
        self._engine, self._revision = engine, snapshot.revision
        self._snapshot, self._by_id, self._loaded = snapshot, by_id, loaded
        log.info(
            "engine.snapshot_loaded",
            engine=self.name,
            revision=snapshot.revision,
            recipients_loaded=len(by_id) if loaded is None else len(loaded),
        )

    def _form(self, recipient: Recipient) -> dict[str, Any]:
        """A recipient as Rego sees it, kept while the recipient object is unchanged."""
        held = self._forms.get(recipient.id)
        if held is not None and held[0] is recipient:
            return held[1]
        form = recipient.to_data()
        self._forms[recipient.id] = (recipient, form)
        return form

    def _load(
        self, snapshot: Snapshot, by_id: dict[str, Recipient], loaded: set[str] | None
    ) -> regorus.Engine:
        """A clone of the policy engine with the taxonomy, workloads and `loaded` recipients."""
        assert self._base is not None
        chosen = by_id.values() if loaded is None else (by_id[rid] for rid in sorted(loaded))
        registry = policy_data_of(
            {
                "version": snapshot.version,
                "revision": snapshot.revision,
                "recipients": [self._form(r) for r in chosen],
                "workloads": [w.to_data() for w in snapshot.workloads],
            }
        )
        # regorus cannot merge two documents under one key, so taxonomy and registry go together.
        document = {"sharewall": {"taxonomy": self._taxonomy, "registry": registry}}
        engine = _guarded("clone", self._base.clone)
        _guarded("load snapshot", engine.add_data_json, orjson.dumps(document).decode())
        if loaded is None:
            self._forms.clear()  # the gateway case: not worth keeping 10,000 forms
        return engine

    def _include(self, recipient_id: str) -> None:
        """Reload the engine's data with `recipient_id` in the working set (before a decision)."""
        snapshot = self._snapshot
        if snapshot is None or recipient_id not in self._by_id:
            return  # unknown: absent from the registry, absent from the data
        self._working.add(recipient_id)
        everything = len(self._working) > WORKING_SET_LIMIT
        loaded = None if everything else {rid for rid in self._working if rid in self._by_id}
        self._engine = self._load(snapshot, self._by_id, loaded)
        self._loaded = loaded

    async def evaluate(self, policy_input: dict[str, Any]) -> dict[str, Any]:
        return self.evaluate_sync(policy_input)

    def evaluate_sync(self, policy_input: dict[str, Any]) -> dict[str, Any]:
        """Evaluate on the current thread (the engine's thread); the async wrapper adds nothing."""
        return _detached(self._evaluate, policy_input)  # type: ignore[no-any-return]

    def _evaluate(self, policy_input: dict[str, Any]) -> dict[str, Any]:
        if self._engine is None:
            raise EngineError(SNAPSHOT_NOT_LOADED)
        recipient_id = policy_input.get("recipient_id")
        if self._loaded is not None and recipient_id not in self._loaded and recipient_id:
            self._include(recipient_id)
        engine = self._engine
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
        _strand(self._base_thread, self._base, self._engine)
        self._engine = self._base = None
        _release_stranded()

    def __del__(self) -> None:
        # Not closed, and freed here: by the cyclic GC, maybe on another thread than the engines'.
        _strand(
            getattr(self, "_base_thread", None),
            getattr(self, "_base", None),
            getattr(self, "_engine", None),
        )
