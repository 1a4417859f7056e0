"""The proxy's own answers (403/503/502/504/400/414/431/501/505) as complete HTTP/1.1 responses in bytes."""

from __future__ import annotations

from http import HTTPStatus
from typing import TYPE_CHECKING

import orjson

from proxy.outcome import REFUSAL_STATUS, Outcome

if TYPE_CHECKING:  # annotations only: the admin server (and the supervisor) load no inspector
    from proxy.decision import Decision

DECISION_ID_HEADER = "X-Sharewall-Decision-Id"

# Error codes of the JSON bodies (stable; clients and dashboards match on them).
EGRESS_BLOCKED = "egress_blocked"
EGRESS_UNAVAILABLE = "egress_unavailable"
UPSTREAM_UNREACHABLE = "upstream_unreachable"
UPSTREAM_TIMEOUT = "upstream_timeout"
BAD_REQUEST = "bad_request"
HEADERS_TOO_LARGE = "headers_too_large"
URI_TOO_LONG = "uri_too_long"
REQUEST_TIMEOUT = "request_timeout"
TOO_MANY_TUNNELS = "too_many_tunnels"
TOO_MANY_CONNECTIONS = "too_many_connections"
UNSUPPORTED = "unsupported"


def render(
    status: int,
    body: dict[str, object],
    *,
    decision_id: str | None = None,
    keep_alive: bool = True,
    head: bool = False,
    version: str = "1.1",
) -> bytes:
    """One complete response with a JSON body; `head` omits the body but keeps its length."""
    payload = orjson.dumps(body)
    lines = [
        f"HTTP/{version} {status} {HTTPStatus(status).phrase}",
        "Content-Type: application/json",
        f"Content-Length: {len(payload)}",
        "Cache-Control: no-store",
        f"Connection: {'keep-alive' if keep_alive else 'close'}",
    ]
    if decision_id:
        lines.append(f"{DECISION_ID_HEADER}: {decision_id}")
    head_bytes = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head_bytes if head else head_bytes + payload


def blocked(decision: Decision, **kw: object) -> bytes:
    """403 of DESIGN.md: `{"error": "egress_blocked", "decision_id", "reasons": [{code, message, category?}]}`."""
    body = {
        "error": EGRESS_BLOCKED,
        "decision_id": decision.decision_id,
        # `category` (when the reason has one) tells the app which data to drop.
        "reasons": [r.as_dict() for r in decision.reasons],
    }
    return render(403, body, decision_id=decision.decision_id, **kw)  # type: ignore[arg-type]


def unavailable(
    decision_id: str,
    message: str = "egress is unavailable",
    *,
    fault: str | None = None,
    **kw: object,
) -> bytes:
    """503: a fault inside sharewall; the call fails closed. `fault` names it (`inspector_error`, …)."""
    body: dict[str, object] = {"error": EGRESS_UNAVAILABLE, "decision_id": decision_id}
    if fault:
        body["fault"] = fault
    body["message"] = message
    return render(503, body, decision_id=decision_id, **kw)  # type: ignore[arg-type]


def error(
    status: int, code: str, message: str, *, decision_id: str | None = None, **kw: object
) -> bytes:
    """Any other proxy error (400, 414, 431, 501, 502, 504, 505) as `{"error": code, "message": ...}`.

    `decision_id`: the call was decided (an allowed call the upstream failed, 502/504): the
    answer names its decision line, in the body and the header, as a refusal does.
    """
    body: dict[str, object] = {"error": code}
    if decision_id:
        body["decision_id"] = decision_id
    body["message"] = message
    return render(status, body, decision_id=decision_id, **kw)  # type: ignore[arg-type]


def rejection(outcome: Outcome, decision: Decision, **kw: object) -> bytes:
    """The answer to a call sharewall does not send: 403 blocked, 503 unavailable, 502 unreachable."""
    if outcome is Outcome.BLOCK:
        return blocked(decision, **kw)
    if outcome is Outcome.UNAVAILABLE:
        return unavailable(decision.decision_id, fault=decision.fault, **kw)
    if outcome is Outcome.UNREACHABLE:
        return error(
            REFUSAL_STATUS[outcome],
            UPSTREAM_UNREACHABLE,
            "cannot resolve the destination",
            decision_id=decision.decision_id,
            **kw,
        )
    raise ValueError(f"{outcome} is not a refusal")
