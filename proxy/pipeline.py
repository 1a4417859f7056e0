"""The one pipeline every call runs through: check the destination, inspect, decide, map to an outcome.

`decide_exchange()` decides an `Exchange` (see `proxy.exchange` for its lifecycle) whichever
way it entered: the proxy's listeners, a transparent listener and `sharewall check` (offline,
with `offline_resolver()`) all call it. `outcome_of()` turns the decision, the mode and the
destination into what happens to the call; report mode is one of its answers
(`WOULD_BLOCK`), never a branch in a transport. `record_exchange()` writes the one
`egress.decision` line of the call.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from proxy.decide import (
    DESTINATION_MISMATCH,
    DESTINATION_UNIDENTIFIED,
    destination_denied,
    destination_forbidden,
)
from proxy.decision import Decision
from proxy.decision_log import LOG_UNAVAILABLE, decision_record
from proxy.destinations import DestinationForbidden, DestinationMismatch, Resolver
from proxy.inspect import inspect_call
from proxy.inspect.model import BODY_TOO_LARGE, DEFAULT_LIMITS, Inspection, InspectionLimits
from proxy.outcome import REFUSAL_STATUS, REFUSED_BY_US, SENT, Outcome, outcome_of
from sharewall.logs import stdout_lines

if TYPE_CHECKING:  # annotations only
    from proxy.decide import Decider
    from proxy.decision_log import DecisionLog
    from proxy.exchange import Exchange

# Bodies above this are inspected in a worker thread so one big payload does not stall the loop.
INSPECT_IN_THREAD_BYTES = 64 * 1024


async def check_destination(ex: Exchange, resolver: Resolver | None) -> Decision | None:
    """Resolve the exchange's destination once; the deny when it is forbidden, else None.

    Sets `ex.destination` (the checked address) or `ex.unresolved` (the name did not resolve:
    the call is still decided, so a blocked call is a 403 whatever DNS says); a forbidden
    destination is the exchange's decision at once. Runs once per exchange (a CONNECT checks
    its destination before choosing to intercept). `resolver=None` skips the check (the
    warm-up's throwaway call only).
    """
    if ex.destination_checked:
        return ex.decision
    ex.destination_checked = True
    if ex.unidentified is not None:
        # Transparent capture: nothing names the destination (not HTTP, TLS without SNI, ...).
        ex.decision = destination_denied(ex.call(), DESTINATION_UNIDENTIFIED, ex.unidentified)
        return ex.decision
    if ex.connected_to is not None and ex.port != ex.connected_to[1]:
        # A Host naming another port than the one connected to (RFC 9110 §7.2).
        detail = f"port {ex.connected_to[1]}"
        ex.decision = destination_denied(ex.call(), DESTINATION_MISMATCH, detail)
        return ex.decision
    if resolver is None:
        return None
    try:
        if ex.connected_to is None:
            port = ex.upstream_port
            destination = resolver.cached(ex.host, port)  # no coroutines when cached
            if destination is None:
                destination = await resolver.resolve(ex.host, port)
            ex.destination = destination
        else:
            # Transparent capture: the app chose the address; its name must lead there.
            ex.destination = await resolver.resolve_at(
                ex.host, ex.upstream_port, ex.connected_to[0]
            )
    except DestinationForbidden as exc:
        ex.decision = destination_forbidden(ex.call(), exc.detail)
        return ex.decision
    except DestinationMismatch as exc:
        ex.decision = destination_denied(ex.call(), DESTINATION_MISMATCH, exc.address)
        return ex.decision
    except OSError as exc:
        if ex.connected_to is not None:
            # A name that does not resolve cannot be shown to lead to the connected address.
            ex.decision = destination_denied(ex.call(), DESTINATION_MISMATCH, "unresolved")
            return ex.decision
        ex.unresolved = exc
    return None


async def inspect_exchange(ex: Exchange, limits: InspectionLimits = DEFAULT_LIMITS) -> Inspection:
    """Inspect what the exchange sends (URL, filtered headers, body prefix); `Inspection()` when spliced."""
    if ex.inspected and len(ex.body) > INSPECT_IN_THREAD_BYTES:
        # The inspector sees the real path (query included); the policy input a redacted one.
        inspection = await asyncio.to_thread(
            inspect_call,
            ex.method,
            ex.url,
            ex.headers,
            ex.body,
            limits=limits,
            body_truncated=ex.body_truncated,
        )
        return _with_truncation(ex, inspection)
    return _inspect_on_loop(ex, limits)


def _inspect_on_loop(ex: Exchange, limits: InspectionLimits) -> Inspection:
    """`inspect_exchange` for a body inspected on the event loop (up to INSPECT_IN_THREAD_BYTES):
    a plain call, which `decide_exchange` makes without awaiting a coroutine (~0.7k instructions)."""
    if not ex.inspected:
        return _NOT_INSPECTED
    # Arguments spelled out, not `*args`: a starred call builds a tuple and a dict.
    inspection = inspect_call(
        ex.method, ex.url, ex.headers, ex.body, limits=limits, body_truncated=ex.body_truncated
    )
    return _with_truncation(ex, inspection) if ex.body_truncated else inspection


# What a spliced call's inspection is (an immutable value: one for all).
_NOT_INSPECTED = Inspection()


def _with_truncation(ex: Exchange, inspection: Inspection) -> Inspection:
    if ex.body_truncated and BODY_TOO_LARGE not in inspection.problems:
        # Belt and braces: the policy must see that it did not get every byte.
        inspection = Inspection(
            findings=inspection.findings, problems=(*inspection.problems, BODY_TOO_LARGE)
        )
    return inspection


async def decide_exchange(
    ex: Exchange,
    decider: Decider,
    *,
    resolver: Resolver | None,
    limits: InspectionLimits = DEFAULT_LIMITS,
) -> Decision:
    """Decide one exchange: destination check, inspection, policy. Never raises for a fault.

    Sets `ex.destination`/`ex.unresolved`, `ex.inspection`, `ex.decision` and the timings;
    the decision id is the exchange's request id.
    """
    decision = await check_destination(ex, resolver)
    if decision is None:
        t0 = time.perf_counter()
        if len(ex.body) > INSPECT_IN_THREAD_BYTES:
            inspection = await inspect_exchange(ex, limits)
        else:
            inspection = _inspect_on_loop(ex, limits)
        t1 = time.perf_counter()
        # A cache hit is answered without a Call or a coroutine; a miss awaits the engine.
        decision = decider.cached(ex, inspection)
        if decision is None:
            decision = await decider.decide(ex.call(), inspection)
        ex.inspection = inspection
        if ex.inspected:
            ex.timings.inspect_ms = (t1 - t0) * 1000.0
        ex.timings.policy_ms = (time.perf_counter() - t1) * 1000.0
    ex.decision = decision
    return decision


def settle(ex: Exchange, *, mode: str) -> Outcome:
    """`outcome_of()` for a decided exchange, stored in `ex.outcome`.

    A call that would be sent while stdout takes no more log lines (its reader stalled and the
    buffer is full, `LineWriter.accepting`) is refused 503 `log_unavailable` instead: no call
    goes out whose line could not be kept.
    """
    assert ex.decision is not None
    outcome = outcome_of(ex.decision, mode=mode, has_destination=ex.destination is not None)
    ex.outcome = outcome
    if outcome in SENT:  # `outcome.is_sent` without the property call (~0.7k instructions)
        lines = stdout_lines()
        if lines is not None and not lines.accepting:
            return fail_exchange(ex, LOG_UNAVAILABLE)
    return outcome


def record_exchange(ex: Exchange, decision_log: DecisionLog, *, mode: str) -> None:
    """Write the exchange's one `egress.decision` record (line, spool, sinks), unless written."""
    if ex.recorded:
        return
    ex.recorded = True
    decision_log.emit(_record_of(ex, mode))


def fail_exchange(ex: Exchange, fault: str) -> Outcome:
    """A call sharewall cannot carry out after all: its decision becomes that fault, refused.

    For what fails past the decision, e.g. an intercepted tunnel whose leaf certificate cannot
    be made (`internal_error`) or whose TLS handshake with the app fails
    (`tls_handshake_failed`: the app does not trust our CA, or does not speak TLS).
    """
    recipient_id = ex.recipient.id if ex.recipient is not None else None
    ex.decision = Decision(
        ex.decision_id, "deny", recipient_id=recipient_id, purpose=ex.purpose, fault=fault
    )
    ex.outcome = Outcome.UNAVAILABLE
    return ex.outcome


async def commit_refusal(
    ex: Exchange, decision_log: DecisionLog, *, mode: str, answered: bool = True
) -> Outcome:
    """Before a refusal is written: make its record durable; the outcome to answer with.

    Sets `ex.status`: the refusal's HTTP status, or None when the app gets no HTTP answer
    (`answered=False`: a captured TLS connection is closed, a TLS client cannot read a 403).
    A refused call (block, fault) returns once its record is fsync'd to the
    spool (`DecisionLog.commit`), so a crash right after the answer loses no record. When the
    spool cannot take it (disk full), the call is answered 503 (`fault: spool_unavailable`)
    instead: no refusal without its record, and nothing is forwarded. That fault's own record
    is queued for the spool, which writes it once the disk takes writes again.
    """
    from proxy.spool import SpoolUnavailable

    assert ex.outcome is not None and ex.decision is not None
    ex.status = REFUSAL_STATUS[ex.outcome] if answered else None
    if not ex.outcome.is_refused_by_us:
        return ex.outcome
    ex.recorded = True
    try:
        await decision_log.commit(_record_of(ex, mode))
    except SpoolUnavailable:
        if ex.decision.fault is None:
            ex.decision = replace(ex.decision, fault="spool_unavailable")
        ex.outcome, ex.status = Outcome.UNAVAILABLE, 503 if answered else None
        decision_log.emit(_record_of(ex, mode))
    return ex.outcome


def _record_of(ex: Exchange, mode: str) -> dict[str, Any]:
    assert ex.decision is not None
    timings, outcome = ex.timings, ex.outcome
    # By position, in `decision_record`'s parameter order: a record per call.
    return decision_record(
        ex.decision,
        mode,
        ex.method,
        ex.host,
        ex.port,
        ex.path,
        ex.inspected,
        ex.tunnel,
        ex.status,
        ex.source.workload,
        ex.source.namespace,
        timings.elapsed_ms(),
        timings.inspect_ms,
        timings.policy_ms,
        timings.upstream_ms,
        outcome in REFUSED_BY_US,  # `is_refused_by_us` (None is not in it), without a property
    )


class _Offline(OSError):
    pass


async def _no_dns(*_args: object, **_kwargs: object) -> list[tuple[object, ...]]:
    raise _Offline("offline: names are not resolved")


def offline_resolver(pins: dict[tuple[str, int], str] | None = None) -> Resolver:
    """A resolver for offline decisions (`sharewall check`): no DNS lookups.

    IP literals, `localhost` and pins are checked as the proxy checks them (a metadata address
    is `DESTINATION_FORBIDDEN` here too); a name is left unresolved and decided by the policy.
    """
    return Resolver(pins, getaddrinfo=_no_dns, dns_ttl=0)
