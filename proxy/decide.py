"""The one place a call becomes a decision: policy engine behind a cache, failing closed."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog

from proxy.decision import (
    Action,
    Call,
    Decision,
    Reason,
    build_policy_input,
    decision_of_fields,
    policy_date,
)
from proxy.decision_cache import DecisionCache, cache_key
from proxy.engines.base import (
    ENGINE_ERROR,
    ENGINE_TIMEOUT,
    ENGINE_UNDEFINED,
    SNAPSHOT_NOT_LOADED,
    EngineError,
    PolicyEngine,
)
from proxy.inspect.model import Inspection
from sharewall.snapshot import Snapshot
from sharewall.taxonomy import load_taxonomy

if TYPE_CHECKING:  # annotations only
    from proxy.exchange import Exchange

log = structlog.get_logger(__name__)

# decide()'s own bound when an engine's is shorter (the embedded engine has none of its own).
BACKSTOP_SECONDS = 2.0


def backstop_for(engine_timeout: float) -> float:
    """decide()'s bound over an engine bounded by `engine_timeout` seconds: above it, so the
    engine's own timeout is what answers (a longer --engine-timeout is not cut to 2 s)."""
    return max(BACKSTOP_SECONDS, engine_timeout + 1.0)


DESTINATION_FORBIDDEN = "DESTINATION_FORBIDDEN"
DESTINATION_MISMATCH = "DESTINATION_MISMATCH"
DESTINATION_UNIDENTIFIED = "DESTINATION_UNIDENTIFIED"

# The policy's verdict, without anything specific to one call.
Verdict = tuple[bool, tuple[Reason, ...]]
# What the cache holds: action, reasons and the sorted categories (part of the key anyway).
_Entry = tuple[Action, tuple[Reason, ...], tuple[str, ...]]


class MalformedDecision(ValueError):
    """The policy answered something that is not a decision document."""


def parse_verdict(document: Any) -> Verdict:
    """Validate a raw decision document; `allow` must agree with `action` and with no reasons."""
    if not isinstance(document, dict):
        raise MalformedDecision("decision is not an object")
    allow, action, raw_reasons = (
        document.get("allow"),
        document.get("action"),
        document.get("reasons"),
    )
    if not isinstance(allow, bool) or action not in ("allow", "deny"):
        raise MalformedDecision("allow/action missing or invalid")
    if not isinstance(raw_reasons, list):
        raise MalformedDecision("reasons is not a list")
    reasons = []
    for item in raw_reasons:
        if not isinstance(item, dict):
            raise MalformedDecision("reason is not an object")
        code, message, category = item.get("code"), item.get("message"), item.get("category")
        if not isinstance(code, str) or not code or not isinstance(message, str):
            raise MalformedDecision("reason without code or message")
        if category is not None and not isinstance(category, str):
            raise MalformedDecision("reason category is not a string")
        reasons.append(Reason(code=code, message=message, category=category))
    if allow != (action == "allow") or allow == bool(reasons):
        raise MalformedDecision("allow, action and reasons disagree")
    return allow, tuple(reasons)


def destination_forbidden(call: Call, detail: str) -> Decision:
    """The deny for a destination resolving to a private/loopback/link-local/metadata address.

    Decided by the proxy before the policy runs; `detail` (e.g. the address) is logged, not
    returned, so that apps learn the code but not our network layout.
    """
    return destination_denied(call, DESTINATION_FORBIDDEN, detail)


def destination_denied(call: Call, code: str, detail: str | None) -> Decision:
    """A deny the proxy decides about the destination itself, before the policy runs.

    `code` is `DESTINATION_FORBIDDEN`, or for a transparently captured connection
    `DESTINATION_MISMATCH` (the connected address is not one the name resolves or is pinned to)
    or `DESTINATION_UNIDENTIFIED` (no name at all). `detail` is logged, never returned.
    """
    log.info(
        "egress.destination_denied",
        decision_id=call.request_id,
        code=code,
        recipient_id=call.recipient_id,
        host=call.host,
        port=call.port,
        detail=detail,
    )
    return Decision(
        decision_id=call.request_id,
        action="deny",
        reasons=(Reason(code, load_taxonomy().reason_codes[code]),),
        recipient_id=call.recipient_id,
        purpose=call.purpose,
    )


class Decider:
    """Turns (call, inspection) into a `Decision` with a policy engine and a decision cache.

    `decide` never raises and never allows on error: an engine fault, a timeout, a missing
    snapshot or an undefined/malformed policy result is a deny with `fault` set (answered 503).
    """

    def __init__(
        self, engine: PolicyEngine, *, cache_size: int = 4096, timeout: float = BACKSTOP_SECONDS
    ) -> None:
        self.engine = engine
        # A backstop over the engine's own bound: whatever an engine does, decide() answers.
        self.timeout = timeout
        self.cache: DecisionCache[_Entry] = DecisionCache(cache_size)
        self._snapshot: Snapshot | None = None
        self._day = ""
        self._day_ends = 0.0  # time.time() at which `_day` stops being today (UTC)

    @property
    def snapshot(self) -> Snapshot | None:
        """The snapshot the engine accepted last (None until one was accepted)."""
        return self._snapshot

    @property
    def has_snapshot(self) -> bool:
        return self._snapshot is not None

    @property
    def is_ready(self) -> bool:
        """A snapshot is loaded and the engine is ready (what `/readyz` reports)."""
        return self._snapshot is not None and self.engine.is_ready

    @property
    def cache_hits(self) -> int:
        return self.cache.hits

    @property
    def cache_misses(self) -> int:
        return self.cache.misses

    async def set_snapshot(self, snapshot: Snapshot) -> bool:
        """Load `snapshot` into the engine; on failure keep the previous one and return False."""
        try:
            await self.engine.set_snapshot(snapshot)
        except EngineError as exc:
            log.error(
                "engine.snapshot_rejected",
                engine=getattr(self.engine, "name", None),
                revision=snapshot.revision,
                fault=exc.code,
                detail=exc.detail,
            )
            return False
        except Exception:
            log.exception(
                "engine.snapshot_rejected", revision=snapshot.revision, fault=ENGINE_ERROR
            )
            return False
        # After the engine swap: a verdict stored from now on belongs to the new snapshot.
        self.cache.reset(snapshot.revision)
        self._snapshot = snapshot
        return True

    def cached(self, ex: Exchange, inspection: Inspection) -> Decision | None:
        """`decide(ex.call(), inspection)`'s answer when it is a cache hit, else None.

        The hot path (most calls are hits): no `Call` is built and no coroutine run. The key is
        `cache_key`'s, read from the exchange's own fields (the ones `Exchange.call()` copies),
        and the `Decision` is the one `decide()` builds on a hit. None, and nothing counted,
        for a miss and for what `decide()` treats apart (inspection problems, no snapshot):
        the caller then awaits `decide()`, which counts the miss.
        """
        if inspection.problems or self._snapshot is None:
            return None
        recipient, source = ex.recipient, ex.source
        recipient_id = recipient.id if recipient is not None else None
        scheme, tls_upstream = ex.scheme, ex.tls_upstream
        # cache_key(ex.call(), categories, complete=True, day), field for field.
        key = (
            recipient_id,
            ex.purpose,
            inspection.categories,
            source.workload,
            source.namespace,
            scheme,
            ex.inspected,
            tls_upstream,
            True,
            # `_today()` inline but for the day's roll-over: ~0.3k instructions a call.
            self._day if time.time() < self._day_ends else self._today(),
        )
        entry = self.cache.hit(key)
        if entry is None:
            return None
        # decide()'s Decision on a hit, by position (complete: no problems).
        return decision_of_fields(
            ex.decision_id,
            entry[0],
            entry[1],
            recipient_id,
            ex.purpose,
            entry[2],
            inspection.findings,
            (),
            None,
            scheme,
            tls_upstream,
            True,
        )

    async def decide(
        self, call: Call, inspection: Inspection, *, now: datetime | None = None
    ) -> Decision:
        """Decide one call; always a `Decision`, even on a cache hit.

        Its decision id is the call's `request_id` (the exchange's id): the one id of the
        call in its decision line, the answer the app gets, its spool record and any log.
        """
        categories = inspection.categories
        if inspection.fault is not None:
            # A bug in an inspector is ours to fix, not the app's data to blame: 503, a fault.
            return self._fault(call, inspection, categories, inspection.fault)
        if self._snapshot is None:
            return self._fault(call, inspection, categories, SNAPSHOT_NOT_LOADED)
        day = policy_date(now) if now is not None else self._today()
        # Most calls have no problems: skip the scan of `complete` on the hot path.
        complete = not inspection.problems or inspection.complete
        key = cache_key(call, categories, complete, day)
        entry = self.cache.get(key)
        if entry is None:
            generation = self.cache.generation
            try:
                async with asyncio.timeout(self.timeout):
                    document = await self.engine.evaluate(
                        build_policy_input(call, inspection, date=day)
                    )
                verdict = parse_verdict(document)
            except TimeoutError:
                log.warning("engine.fault", fault=ENGINE_TIMEOUT, decision_id=call.request_id)
                return self._fault(call, inspection, categories, ENGINE_TIMEOUT)
            except EngineError as exc:
                log.warning(
                    "engine.fault", fault=exc.code, detail=exc.detail, decision_id=call.request_id
                )
                return self._fault(call, inspection, categories, exc.code)
            except MalformedDecision as exc:
                log.error("engine.malformed_decision", detail=str(exc), decision_id=call.request_id)
                return self._fault(call, inspection, categories, ENGINE_UNDEFINED)
            except Exception:
                # A bug of ours or of an engine: fail closed, keep the traceback in the log.
                log.exception("engine.unexpected_error", decision_id=call.request_id)
                return self._fault(call, inspection, categories, ENGINE_ERROR)
            allow, reasons = verdict
            action: Action = "allow" if allow else "deny"
            entry = (action, reasons, tuple(sorted(categories)))
            self.cache.put(key, entry, generation=generation)
        action, reasons, sorted_categories = entry
        # By position, in field order (decision_id, action, reasons, recipient_id, purpose,
        # categories, findings, problems, fault, scheme, tls_upstream, complete).
        return decision_of_fields(
            call.request_id,
            action,
            reasons,
            call.recipient_id,
            call.purpose,
            sorted_categories,
            inspection.findings,
            inspection.problems,
            None,
            call.scheme,
            call.tls_upstream,
            complete,
        )

    def _today(self) -> str:
        """`policy_date()` for now, recomputed only when the UTC day rolls over (hot path)."""
        wall = time.time()
        if wall >= self._day_ends:
            today = datetime.fromtimestamp(wall, UTC).date()
            self._day = today.isoformat()
            midnight = datetime(today.year, today.month, today.day, tzinfo=UTC) + timedelta(days=1)
            self._day_ends = midnight.timestamp()
        return self._day

    @staticmethod
    def _fault(
        call: Call, inspection: Inspection, categories: frozenset[str], fault: str
    ) -> Decision:
        return Decision(
            decision_id=call.request_id,
            action="deny",
            recipient_id=call.recipient_id,
            purpose=call.purpose,
            categories=tuple(sorted(categories)),
            findings=inspection.findings,
            problems=inspection.problems,
            fault=fault,
        )
