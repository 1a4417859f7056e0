"""`POST /v1/logs`: OPA decision-log uploads, so an OPA sidecar's decisions land beside the proxy's.

OPA's decision-log plugin POSTs a gzip JSON array of events (`decision_id`, `path`, `input`,
`result`, `timestamp`, `labels`...). A denying `sharewall/egress/decision` result is stored
as a blocked flow (idempotent by the caller's shipping identity and OPA's decision id); an
allowing one is counted; any other event (another query, a malformed one) is counted as
ignored. Flows are stored under the proxy id `opa:<labels.id>`, bound to the caller like a
proxy's (`registry.ingest.bind_proxy_ids`; an event without `labels.id` binds nothing).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import structlog
from aiohttp import web
from pydantic import BaseModel

from registry.errors import ApiError
from registry.ingest import bind_proxy_ids, check_record, flow_row, store_flows
from sharewall.decision_record import RecordError

from . import keys
from .bodies import read_upload
from .routes import RouteTable, caller

log = structlog.get_logger("sharewall.logs")

DECISION_PATHS = frozenset({"sharewall/egress/decision", "sharewall/egress"})
MAX_EVENTS = 10_000

routes = RouteTable(tags=("flows",))


class LogsAccepted(BaseModel):
    """What the registry did with an upload."""

    accepted: int
    duplicates: int
    allowed: int
    ignored: int


def _decision_of(event: dict[str, Any]) -> dict[str, Any] | None:
    """The decision document of an event, or None when the event is not an egress decision."""
    if str(event.get("path", "")).strip("/") not in DECISION_PATHS:
        return None
    result = event.get("result")
    if isinstance(result, dict) and isinstance(result.get("decision"), dict):
        result = result["decision"]  # the query was the package, not the rule
    if not isinstance(result, dict) or "allow" not in result:
        return None
    return result


def _is_denied(decision: dict[str, Any]) -> bool:
    # Fail closed in reading, too: only an explicit allow counts as one.
    return not (decision.get("allow") is True and decision.get("action", "allow") == "allow")


def event_record(event: dict[str, Any], decision: dict[str, Any]) -> dict[str, Any]:
    """Map an OPA event and its denying decision onto a proxy-style decision record."""
    policy_input = event.get("input") if isinstance(event.get("input"), dict) else {}
    request = policy_input.get("request") if isinstance(policy_input.get("request"), dict) else {}
    source = policy_input.get("source") if isinstance(policy_input.get("source"), dict) else {}
    reasons = decision.get("reasons") if isinstance(decision.get("reasons"), list) else []
    return check_record(
        {
            "decision_id": event.get("decision_id"),
            "time": event.get("timestamp") or datetime.now(UTC).isoformat(),
            "action": "deny",
            "mode": "enforce",
            "reasons": [r for r in reasons if isinstance(r, dict)],
            "recipient_id": policy_input.get("recipient_id"),
            "host": request.get("host") or "",
            "method": request.get("method") or "",
            "path": request.get("path") or "",
            "purpose": policy_input.get("purpose"),
            "categories": policy_input.get("categories") or [],
            "source_workload": source.get("workload"),
            "source_namespace": source.get("namespace"),
            "findings": policy_input.get("findings") or [],
        }
    )


_UNKNOWN_OPA = "opa:unknown"


def _proxy_id(event: dict[str, Any]) -> str:
    labels = event.get("labels") if isinstance(event.get("labels"), dict) else {}
    return f"opa:{labels.get('id', 'unknown')}"[:200]


@routes.post(
    "/v1/logs",
    summary="OPA decision-log upload (gzip JSON array of events); denials become flows",
    roles=("proxy",),
    request={"type": "array", "items": {"type": "object"}},
    body="raw",
    response=LogsAccepted,
    responses={403: "Not a proxy token, or an event's `opa:<labels.id>` is bound to another"},
)
async def post_logs(request: web.Request) -> LogsAccepted:
    """Ingest an OPA decision-log upload (flows keyed to the caller's identity, as decisions)."""
    shipper_id = caller(request).shipper_id
    events = await read_upload(request)
    if not isinstance(events, list):
        raise ApiError(
            422, "validation-error", "Request body is not valid", "expected a JSON array of events"
        )
    if len(events) > MAX_EVENTS:
        raise ApiError(
            413, "payload-too-large", "Payload too large", f"at most {MAX_EVENTS} events"
        )
    flows: dict[str, dict[str, Any]] = {}
    allowed = ignored = 0
    for event in events:
        decision = _decision_of(event) if isinstance(event, dict) else None
        if decision is None:
            ignored += 1
            continue
        if not _is_denied(decision):
            allowed += 1
            continue
        try:
            record = event_record(event, decision)
        except RecordError as exc:
            ignored += 1
            log.info("logs.event_ignored", field=exc.field, error=exc.message)
            continue
        flows.setdefault(record["decision_id"], flow_row(record, _proxy_id(event), shipper_id))
    proxy_ids = {row["proxy_id"] for row in flows.values()} - {_UNKNOWN_OPA}
    async with request.app[keys.ENGINE].begin() as conn:
        await bind_proxy_ids(conn, proxy_ids, shipper_id)
        accepted = await store_flows(conn, list(flows.values()))
    denied = len(events) - allowed - ignored
    result = LogsAccepted(
        accepted=accepted, duplicates=denied - accepted, allowed=allowed, ignored=ignored
    )
    log.info("logs.ingested", token_id=caller(request).token_id, **result.model_dump())
    return result
