"""The canonical `egress.decision` line: one per call, stable field names, never a secret or value."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson
import structlog

from proxy.decision import Decision
from sharewall.decision_record import (
    FIELD_NAMES,
    LINE_FIELDS,
    RECORD_ONLY_FIELDS,
    is_spooled,
    record_in_order,
)
from sharewall.line_writer import LineWriter
from sharewall.redaction import REDACTED, SECRET_PARAMS, redact_path

__all__ = [
    "REDACTED",
    "SECRET_PARAMS",
    "DecisionLog",
    "JsonLines",
    "decision_record",
    "redact_path",
]

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
# The flags the policy decided on (null when it did not run), for the registry's impact replay.
SCHEME = "scheme"
TLS_UPSTREAM = "tls_upstream"
COMPLETE = "complete"
# Only in the spooled record.
TIME = "time"
REASONS = "reasons"
FINDINGS = "findings"

# The fault of a call refused because stdout takes no more log lines (`LineWriter.accepting`).
LOG_UNAVAILABLE = "log_unavailable"

DecisionSink = Callable[[dict[str, Any]], None]

# A record's JSON as the spool writes it, a line: orjson appends the newline (no copy to add it).
_LINE = orjson.OPT_APPEND_NEWLINE

log = structlog.get_logger("sharewall.proxy")


class _UtcClock:
    """ISO 8601 UTC stamps of the wall clock, as `datetime.isoformat` writes them, cheaply.

    Two stamps per call (the record's `time`, the line's `timestamp`) cost ~4 µs each via
    `datetime.now(UTC).isoformat()`; the date-and-seconds part only changes once a second.
    """

    __slots__ = ("_ascii_prefix", "_prefix", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""
        self._ascii_prefix = b""

    def _prefix_of(self, second: int) -> str:
        """The date-and-seconds part of a stamp of `second` (made once a second)."""
        if second != self._second:
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._ascii_prefix = self._prefix.encode()
            self._second = second
        return self._prefix

    def millis(self) -> str:
        """`datetime.now(UTC).isoformat(timespec="milliseconds")`."""
        # Floored, like datetime.now(); one division of the large count (the rest is small).
        second, nanos = divmod(time.time_ns(), 1_000_000_000)
        prefix = self._prefix if second == self._second else self._prefix_of(second)
        return prefix + _MILLIS[nanos // 1_000_000]

    def micros_z(self) -> bytes:
        """`datetime.now(UTC).isoformat().replace("+00:00", "Z")` (structlog's TimeStamper), as
        ASCII bytes."""
        return b"".join(self.micros_z_parts())

    def micros_z_parts(self) -> tuple[bytes, bytes, bytes]:
        """`micros_z()` in three parts (date and seconds, `.mmm` or `Z`, `uuuZ` or nothing),
        which the line joins with its own parts: no stamp is concatenated first per line."""
        second, nanos = divmod(time.time_ns(), 1_000_000_000)
        if second != self._second:
            self._prefix_of(second)
        if nanos < 1000:  # no microsecond: isoformat() writes no fraction
            return self._ascii_prefix, b"Z", b""
        millis, rest = divmod(nanos // 1000, 1000)
        return self._ascii_prefix, _DOT_DIGITS[millis], _DIGITS_Z[rest]


# `.000+00:00` ... `.999+00:00`; `.000` ... `.999`, `000Z` ... `999Z`: lookups instead of
# formatting numbers per call.
_MILLIS = tuple(f".{ms:03d}+00:00" for ms in range(1000))
_DOT_DIGITS = tuple(f".{n:03d}".encode() for n in range(1000))
_DIGITS_Z = tuple(f"{n:03d}Z".encode() for n in range(1000))
_clock = _UtcClock()


def decision_record(
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
    """The record of one call (`sharewall.decision_record`): log line fields plus the rest.

    The proxy passes the arguments by position (a record per call); keywords work too.

    `blocked` says whether the proxy refused the call itself; by default a denied decision
    is blocked in enforce mode only (report mode lets it pass, flagged `would_block`). The
    path is redacted from the decision's findings (query values and path segments where
    personal data was found are replaced by its category).
    """
    # `not decision.allow` from the fields: a property costs a Python call (~600 instructions).
    denied = decision.action != "allow" or decision.fault is not None
    if blocked is None:
        blocked = denied and mode != "report"
    # Each list and its derived one in one loop (no comprehension: ~1.5k instructions each).
    # The dicts are `Reason.as_dict()` and `Finding.as_dict()` without their calls (~300
    # instructions each); a test checks they agree.
    reasons, reason_codes = [], []
    for reason in decision.reasons:
        code = reason.code
        rendered = {"code": code, "message": reason.message}
        if reason.category:
            rendered["category"] = reason.category
        reasons.append(rendered)
        reason_codes.append(code)
    findings, finding_locations = [], []
    for finding in decision.findings:
        category, location = finding.category, finding.location
        findings.append({"category": category, "location": location, "detector": finding.detector})
        finding_locations.append(f"{category}@{location}")
    return record_in_order(
        _clock.millis(),
        decision.decision_id,
        "deny" if blocked else "allow",
        denied and not blocked,
        mode,
        reason_codes,
        decision.recipient_id,
        host,
        port,
        method,
        path,
        decision.purpose,
        sorted(decision.categories),
        finding_locations,
        source_workload,
        source_namespace,
        inspected,
        tunnel,
        status,
        decision.fault,
        list(decision.problems),
        latency_ms,
        inspect_ms,
        policy_ms,
        upstream_ms,
        reasons,
        findings,
        decision.scheme,
        decision.tls_upstream,
        decision.complete,
    )


# Record keys that stay out of the log line (they are in the spool; the line stays short).
_RECORD_ONLY = RECORD_ONLY_FIELDS

# A record's fields in order are `time`, the line's fields, then the record-only rest from
# `reasons` on: its JSON holds the line's fields as one run of bytes, which `JsonLines` cuts
# out instead of encoding them a second time.
if (
    FIELD_NAMES[0] != TIME
    or FIELD_NAMES[1 : 1 + len(LINE_FIELDS)] != LINE_FIELDS
    or FIELD_NAMES[1 + len(LINE_FIELDS)] != REASONS
):
    raise RuntimeError("the record's line fields are not one run between `time` and `reasons`")
_TIME_KEY = b'{"time":"'  # the record's JSON starts with its time, a string without escapes
_LINE_START = len(_TIME_KEY) + 2  # plus the time's length: past `{"time":"...",`
_REASONS_KEY = b',"reasons":'  # the first record-only field after the line's
_LINE_END = b',"event":"' + EVENT.encode() + b'","level":"info","timestamp":"'


class JsonLines:
    """Writes `egress.decision` lines as `sharewall.logs` renders them, without structlog's cost.

    One line per call is the proxy's hottest log: it is cut from the record's JSON (which the
    spool keeps too), not built as a dict of its own and encoded again. The line is queued on
    the process's stdout `LineWriter` (`sharewall.logs.stdout_lines()`), the one ordered writer
    structlog's lines go through too: a writer thread writes it, so a stalled stdout never
    blocks the loop. The fields, their order, `level` and the ISO UTC `timestamp` are those of
    `configure_logging(json=True)`; use it only in a process configured that way, at level
    info or below (the CLI decides).
    """

    __slots__ = ("writer",)

    def __init__(self, writer: LineWriter) -> None:
        self.writer = writer

    def write(self, record: dict[str, Any], encoded: bytes) -> None:
        """Queue the line of `record`, whose JSON (`orjson.dumps(record)`, with or without a
        trailing newline) is `encoded`.

        The line is the record's line fields, in order (the bytes between `time` and
        `reasons`), then `event`, `level` and the timestamp, exactly structlog's
        TimeStamper(fmt="iso", utc=True). `,"reasons":` is found from the end (the record-only
        fields are the shorter part): a quote inside a string is escaped, so `,"` is never
        inside one and the bytes are only ever the record's own `reasons` key (the objects in
        its lists have other keys).
        """
        start = _LINE_START + len(record[TIME])
        end = encoded.rindex(_REASONS_KEY)
        date_and_seconds, fraction, micros_z = _clock.micros_z_parts()
        # A call refused because lines cannot be kept: its record is in the fsync'd spool, so
        # its line is the one that may be shed when the buffer overflows (never a sent call's).
        sheddable = record[FAULT] == LOG_UNAVAILABLE
        self.writer.write_line(
            b"".join(
                (
                    b"{",
                    encoded[start:end],
                    _LINE_END,
                    date_and_seconds,
                    fraction,
                    micros_z,
                    b'"}',
                )
            ),
            sheddable=sheddable,
        )


class DecisionLog:
    """Writes the `egress.decision` line, spools blocked/would-block records, feeds the sinks."""

    def __init__(self, spool: Any | None = None, *, lines: JsonLines | None = None) -> None:
        self.spool = spool
        # None: the line goes through structlog (its configuration, e.g. capture_logs in tests).
        self.lines = lines
        # Hooks called with every record (allowed too), e.g. a per-minute ledger counter.
        self.sinks: list[DecisionSink] = []

    async def commit(self, record: dict[str, Any]) -> None:
        """Spool a refused call's record durably, then log it and fan it out.

        Returns once the record is on disk (or at once without a spool); raises
        `SpoolUnavailable` when it cannot be written, having logged nothing: the caller answers
        503 instead of the refusal and records that fault (`emit`).
        """
        encoded = orjson.dumps(record, option=_LINE)  # once, for the spool and the line
        if self.spool is not None:
            await self.spool.commit(record, encoded)
        self.emit(record, spool=False, encoded=encoded)

    def emit(
        self, record: dict[str, Any], *, spool: bool = True, encoded: bytes | None = None
    ) -> None:
        """Log, queue for the spool (if blocked or would-block) and fan the record out; never raises.

        `encoded`: the record's `orjson.dumps` with its trailing newline (`OPT_APPEND_NEWLINE`,
        as the spool writes it), when the caller has it already.
        """
        if self.lines is None:
            line = dict(record)  # a copy in C, then six keys out: cheaper than a filtering loop
            for key in _RECORD_ONLY:
                line.pop(key, None)
            log.info(EVENT, **line)
        else:
            try:
                if encoded is None:
                    encoded = orjson.dumps(record, option=_LINE)
                self.lines.write(record, encoded)
            except Exception:
                log.exception("decision_log.write_failed", decision_id=record[DECISION_ID])
        if spool and self.spool is not None and is_spooled(record):
            try:
                self.spool.append(record, encoded)
            except Exception:
                log.exception("spool.append_failed", decision_id=record[DECISION_ID])
        for sink in self.sinks:
            try:
                sink(record)
            except Exception:
                log.exception("decision_sink.failed", sink=getattr(sink, "__name__", repr(sink)))
