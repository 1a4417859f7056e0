"""The canonical `egress.decision` line: one per call, stable field names, never a secret or value."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import IO, Any
from urllib.parse import parse_qsl, urlencode

import orjson
import structlog

from proxy.decision import Decision

EVENT = "egress.decision"

# Field names of the log line and of the spooled record (the registry ingests these).
DECISION_ID = "decision_id"
ACTION = "action"
WOULD_BLOCK = "would_block"
MODE = "mode"
REASON_CODES = "reason_codes"
RECIPIENT_ID = "recipient_id"
HOST = "host"
PORT = "port"
METHOD = "method"
PATH = "path"
PURPOSE = "purpose"
CATEGORIES = "categories"
FINDING_LOCATIONS = "finding_locations"
SOURCE_WORKLOAD = "source_workload"
SOURCE_NAMESPACE = "source_namespace"
INSPECTED = "inspected"
TUNNEL = "tunnel"
STATUS = "status"
FAULT = "fault"
PROBLEMS = "problems"
LATENCY_MS = "latency_ms"
INSPECT_MS = "inspect_ms"
POLICY_MS = "policy_ms"
UPSTREAM_MS = "upstream_ms"
# Only in the spooled record.
TIME = "time"
REASONS = "reasons"
FINDINGS = "findings"

# Query parameters whose values are credentials (compared case-insensitively).
SECRET_PARAMS = frozenset(
    {
        "access_token",
        "api_key",
        "apikey",
        "key",
        "token",
        "signature",
        "sig",
        "password",
        "secret",
        "client_secret",
        "auth",
    }
)
REDACTED = "REDACTED"
_USERINFO_RE = re.compile(r"^([a-z][a-z0-9+.-]*://)[^/@]*@", re.IGNORECASE)

DecisionSink = Callable[[dict[str, Any]], None]

log = structlog.get_logger("sharewall.proxy")


def redact_path(path: str) -> str:
    """The path with userinfo stripped and token-like query values replaced by `REDACTED`."""
    if "?" not in path and "@" not in path:
        return path  # the common case, paid twice a call: nothing to strip or redact
    path = _USERINFO_RE.sub(r"\1", path)
    base, sep, query = path.partition("?")
    if not sep:
        return base
    query, _, _fragment = query.partition("#")
    pairs = parse_qsl(query, keep_blank_values=True)
    redacted = [(k, REDACTED if k.lower() in SECRET_PARAMS else v) for k, v in pairs]
    return f"{base}?{urlencode(redacted, safe='/:,')}"


def decision_record(
    *,
    decision: Decision,
    mode: str,
    method: str,
    host: str,
    port: int,
    path: str,
    inspected: bool,
    tunnel: bool,
    status: int | None,
    source_workload: str | None,
    source_namespace: str | None,
    latency_ms: float,
    inspect_ms: float | None = None,
    policy_ms: float | None = None,
    upstream_ms: float | None = None,
    blocked: bool | None = None,
) -> dict[str, Any]:
    """The full record of one call (log line fields plus time, reasons and findings).

    `blocked` says whether the proxy refused the call itself; by default a denied decision
    is blocked in enforce mode only (report mode lets it pass, flagged `would_block`).
    """
    denied = not decision.allow
    report = mode == "report"
    if blocked is None:
        blocked = denied and not report
    return {
        TIME: datetime.now(UTC).isoformat(timespec="milliseconds"),
        DECISION_ID: decision.decision_id,
        ACTION: "deny" if blocked else "allow",
        WOULD_BLOCK: denied and not blocked,
        MODE: mode,
        REASON_CODES: list(decision.reason_codes),
        RECIPIENT_ID: decision.recipient_id,
        HOST: host,
        PORT: port,
        METHOD: method,
        PATH: redact_path(path),
        PURPOSE: decision.purpose,
        CATEGORIES: sorted(decision.categories),
        FINDING_LOCATIONS: [f"{f.category}@{f.location}" for f in decision.findings],
        SOURCE_WORKLOAD: source_workload,
        SOURCE_NAMESPACE: source_namespace,
        INSPECTED: inspected,
        TUNNEL: tunnel,
        STATUS: status,
        FAULT: decision.fault,
        PROBLEMS: list(decision.problems),
        LATENCY_MS: round(latency_ms, 3),
        INSPECT_MS: None if inspect_ms is None else round(inspect_ms, 3),
        POLICY_MS: None if policy_ms is None else round(policy_ms, 3),
        UPSTREAM_MS: None if upstream_ms is None else round(upstream_ms, 3),
        REASONS: [r.as_dict() for r in decision.reasons],
        FINDINGS: [f.as_dict() for f in decision.findings],
    }


# Record keys that stay out of the log line (they are in the spool; the line stays short).
_RECORD_ONLY = frozenset({TIME, REASONS, FINDINGS})


class JsonLines:
    """Writes `egress.decision` lines as `registry.logs` renders them, without structlog's cost.

    One line per call is the proxy's hottest log: building it as a plain dict and dumping it
    with orjson costs a fraction of structlog's processor chain, and lines finished in the same
    event-loop iteration reach the file in one write (flushed on the next iteration). The
    fields, their order, `level` and the ISO UTC `timestamp` are those of
    `configure_logging(json=True)`; use it only in a process configured that way, at level
    info or below (the CLI decides).
    """

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self._flush_scheduled = False

    def write(self, line: dict[str, Any]) -> None:
        """Append one event line (`line` already holds every field but the three added here)."""
        line["event"] = EVENT
        line["level"] = "info"
        # Exactly structlog's TimeStamper(fmt="iso", utc=True).
        line["timestamp"] = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        self._stream.write(orjson.dumps(line) + b"\n")
        if self._flush_scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        self._flush_scheduled = True
        loop.call_soon(self.flush)

    def flush(self) -> None:
        """Write out buffered lines (also before other log lines: both share the stream)."""
        self._flush_scheduled = False
        self._stream.flush()


class DecisionLog:
    """Writes the `egress.decision` line, spools blocked/would-block records, feeds the sinks."""

    def __init__(self, spool: Any | None = None, *, lines: JsonLines | None = None) -> None:
        self.spool = spool
        # None: the line goes through structlog (its configuration, e.g. capture_logs in tests).
        self.lines = lines
        # Hooks called with every record (allowed too), e.g. a per-minute ledger counter.
        self.sinks: list[DecisionSink] = []

    def emit(self, record: dict[str, Any]) -> None:
        """Log, spool (if blocked or would-block) and fan the record out; never raises."""
        line = {k: v for k, v in record.items() if k not in _RECORD_ONLY}
        if self.lines is None:
            log.info(EVENT, **line)
        else:
            try:
                self.lines.write(line)
            except Exception:
                log.exception("decision_log.write_failed", decision_id=record[DECISION_ID])
        is_blocked = record[ACTION] == "deny" or record[WOULD_BLOCK]
        if is_blocked and self.spool is not None:
            try:
                self.spool.append(record)
            except Exception:
                log.exception("spool.append_failed", decision_id=record[DECISION_ID])
        for sink in self.sinks:
            try:
                sink(record)
            except Exception:
                log.exception("decision_sink.failed", sink=getattr(sink, "__name__", repr(sink)))
