"""The decision record: one call as the proxy wrote it down, shipped, and stored by the registry.

One definition for both sides. The proxy builds a record with `record_in_order()` (a plain dict:
cheap to build and to dump with orjson, it is made for every call), writes it to its
`egress.decision` line (the `LINE_FIELDS`) and, when blocked or would-block, to its spool, and
ships it. The registry's `POST /v1/decisions` checks each record with `validate_record()` and
documents it with `record_schema()`. Neither side imports the other (nor pydantic) for it.

A fault decision (sharewall could not decide: engine down, no snapshot, an inspector bug, the
spool unwritable) carries `fault` and the HTTP `status` the app got (503), and usually no
reason. A reason carries its `category` when it is about one.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sharewall.redaction import redact_path, redact_record_path

Kind = Literal["str", "int", "float", "bool", "time", "strs", "reasons", "findings"]

MAX_REASONS = 32
MAX_CATEGORIES = 64
MAX_FINDINGS = 1000
_ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_FAULT_RE = re.compile(r"^[a-z0-9_.:-]{1,64}$")


class RecordError(ValueError):
    """A record that cannot be stored: the field and what is wrong with it (never its value)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class RecordField:
    """One field of the record: its name, kind, bounds and meaning."""

    name: str
    kind: Kind
    description: str
    required: bool = False
    nullable: bool = True
    max_length: int | None = None
    choices: tuple[str, ...] = ()
    in_line: bool = True  # also a field of the `egress.decision` log line
    default: Any = None


FIELDS: tuple[RecordField, ...] = (
    RecordField("time", "time", "When the proxy decided (ISO 8601, UTC)", True, False, in_line=False),
    RecordField("decision_id", "str", "Unique id (the X-Sharewall-Decision-Id header)", True, False, 64),
    RecordField("action", "str", "What the proxy did: deny (refused) or allow (forwarded)", True,
                False, choices=("allow", "deny")),
    RecordField("would_block", "bool", "Report mode: the policy denied, the call went out",
                nullable=False, default=False),
    RecordField("mode", "str", "The proxy's mode", nullable=False,
                choices=("enforce", "report"), default="enforce"),
    RecordField("reason_codes", "strs", "Reason codes of the policy (taxonomy)",
                nullable=False, max_length=MAX_REASONS, default=()),
    RecordField("recipient_id", "str", "The registered recipient the host belongs to",
                max_length=63),
    RecordField("host", "str", "Destination host", nullable=False, max_length=260, default=""),
    RecordField("port", "int", "Destination port"),
    RecordField("method", "str", "HTTP method (CONNECT for a tunnel)", nullable=False,
                max_length=16, default=""),
    RecordField("path", "str", "Request target, found personal data replaced by its category",
                nullable=False, max_length=4096, default=""),
    # Any string: the flow of a call with an unknown purpose must be stored to be reviewed.
    RecordField("purpose", "str", "Declared purpose", max_length=64),
    RecordField("categories", "strs", "Data categories found (taxonomy)", nullable=False,
                max_length=MAX_CATEGORIES, default=()),
    RecordField("finding_locations", "strs", "category@location of each finding",
                nullable=False, max_length=MAX_FINDINGS, default=()),
    RecordField("source_workload", "str", "Calling workload", max_length=200),
    RecordField("source_namespace", "str", "Calling workload's namespace", max_length=200),
    RecordField("inspected", "bool", "The payload was inspected (false: a spliced tunnel)"),
    RecordField("tunnel", "bool", "The call came through a CONNECT tunnel"),
    RecordField("status", "int", "HTTP status the app got (403 blocked, 503 fault, ...; null: "
                "no HTTP answer, the connection was closed)"),
    RecordField("fault", "str", "A fault inside sharewall (the call failed closed, 503)",
                max_length=64),
    RecordField("problems", "strs", "Inspection problem codes", nullable=False,
                max_length=64, default=()),
    RecordField("latency_ms", "float", "Time the proxy spent on the call"),
    RecordField("inspect_ms", "float", "Payload inspection time"),
    RecordField("policy_ms", "float", "Policy decision time"),
    RecordField("upstream_ms", "float", "Time to the upstream's response head"),
    RecordField("reasons", "reasons", "Reasons with code, message and category", nullable=False,
                max_length=MAX_REASONS, in_line=False, default=()),
    RecordField("findings", "findings", "Where each category was found (never the value)",
                nullable=False, max_length=MAX_FINDINGS, in_line=False, default=()),
    # The flags the policy decided on (null when it did not run): the impact replay's facts.
    RecordField("scheme", "str", "Scheme the app used (http, https)", max_length=8,
                in_line=False),
    RecordField("tls_upstream", "bool", "The call left over TLS", in_line=False),
    RecordField("complete", "bool", "The inspection saw the whole payload", in_line=False),
)  # fmt: skip

FIELD_NAMES = tuple(f.name for f in FIELDS)
LINE_FIELDS = tuple(f.name for f in FIELDS if f.in_line)
RECORD_ONLY_FIELDS = frozenset(FIELD_NAMES) - frozenset(LINE_FIELDS)


# A decision fact (what the proxy's ledger ships as `kind: fact` rows, the registry sums per
# hour and `/v1/impact` replays): everything the policy depends on, then what it answered.
FACT_KEY_FIELDS = (
    "source_workload",
    "source_namespace",
    "host",
    "port",
    "recipient_id",
    "purpose",
    "categories",
    "scheme",
    "inspected",
    "tls_upstream",
    "complete",
)
FACT_FIELDS = (*FACT_KEY_FIELDS, "verdict", "reason_codes")


def record_in_order(
    time: str,
    decision_id: str,
    action: str,
    would_block: bool,
    mode: str,
    reason_codes: list[str],
    recipient_id: str | None,
    host: str,
    port: int | None,
    method: str,
    path: str,
    purpose: str | None,
    categories: list[str],
    finding_locations: list[str],
    source_workload: str | None,
    source_namespace: str | None,
    inspected: bool | None,
    tunnel: bool | None,
    status: int | None,
    fault: str | None,
    problems: list[str],
    latency_ms: float | None,
    inspect_ms: float | None,
    policy_ms: float | None,
    upstream_ms: float | None,
    reasons: list[dict[str, str]],
    findings: list[dict[str, str]],
    scheme: str | None,
    tls_upstream: bool | None,
    complete: bool | None,
) -> dict[str, Any]:
    """A record of the fields in `FIELD_NAMES` order; `path` is redacted here (the one place
    every output gets it from).

    `reasons` are `{"code", "message", "category"?}` dicts and `findings` are
    `{"category", "location", "detector"}` dicts, as the proxy's decision renders them;
    `reason_codes` are the reasons' codes and `finding_locations` the findings'
    `category@location`, which the proxy renders in the same loop (a comprehension each here
    costs ~1.5k instructions before its first item). The arguments go by position on the
    proxy's per-call path: thirty keyword arguments make CPython match each name per call, and
    a record is made for every proxied call. The dict is a copy of `_RECORD_TEMPLATE` (its keys
    in `FIELD_NAMES` order, copied in one step) filled in by key: a 30-key literal inserts every
    key anew, about half again the cost. Checked against `FIELD_NAMES` when this module is
    imported (a misspelled key would be added at the end).
    """
    record = _RECORD_TEMPLATE.copy()
    record["time"] = time
    record["decision_id"] = decision_id
    record["action"] = action
    record["would_block"] = would_block
    record["mode"] = mode
    record["reason_codes"] = reason_codes
    record["recipient_id"] = recipient_id
    record["host"] = host
    record["port"] = port
    record["method"] = method
    record["path"] = redact_record_path(path, findings, finding_locations)
    record["purpose"] = purpose
    record["categories"] = categories
    record["finding_locations"] = finding_locations
    record["source_workload"] = source_workload
    record["source_namespace"] = source_namespace
    record["inspected"] = inspected
    record["tunnel"] = tunnel
    record["status"] = status
    record["fault"] = fault
    record["problems"] = problems
    # Timings in ms rounded half-up to the microsecond: the floor of the scaled value is an exact
    # integer n, and n / 1000 is the double nearest the decimal n/1000, so its JSON (the
    # shortest float) has at most three decimals. `round(x, 3)`, which differs only on
    # halfway cases (to even), costs ~3k instructions a field (a decimal string and back).
    if latency_ms is not None:
        record["latency_ms"] = (latency_ms * 1000.0 + 0.5) // 1.0 / 1000.0
    if inspect_ms is not None:
        record["inspect_ms"] = (inspect_ms * 1000.0 + 0.5) // 1.0 / 1000.0
    if policy_ms is not None:
        record["policy_ms"] = (policy_ms * 1000.0 + 0.5) // 1.0 / 1000.0
    if upstream_ms is not None:
        record["upstream_ms"] = (upstream_ms * 1000.0 + 0.5) // 1.0 / 1000.0
    record["reasons"] = reasons
    record["findings"] = findings
    record["scheme"] = scheme
    record["tls_upstream"] = tls_upstream
    record["complete"] = complete
    return record


_RECORD_TEMPLATE: dict[str, Any] = dict.fromkeys(FIELD_NAMES)  # every value None


def _check_record_order() -> None:
    """`record_in_order` fills exactly the fields of `FIELDS`, in their order."""
    keys = tuple(record_in_order("", "", "", False, "", [], None, "", None, "", "", None, [], [],
                                 None, None, None, None, None, None, [], None, None, None, None,
                                 [], [], None, None, None))  # fmt: skip
    if keys != FIELD_NAMES:
        raise RuntimeError(f"record_in_order builds {keys}, FIELDS say {FIELD_NAMES}")


_check_record_order()


def is_spooled(record: Mapping[str, Any]) -> bool:
    """Whether a record is kept and shipped: the call was refused, or would have been."""
    return record["action"] == "deny" or bool(record["would_block"])


def kind_of(record: Mapping[str, Any]) -> str:
    """`fault` (sharewall failed closed), `would_block` (report mode) or `deny` (policy)."""
    if record.get("fault"):
        return "fault"
    return "would_block" if record.get("would_block") else "deny"


# -- validation (the registry's ingest) ---------------------------------------------------------


class Vocabulary:
    """What `validate_record` checks ids against (the taxonomy's reason codes and categories)."""

    def __init__(
        self, is_reason_code: Callable[[str], bool], is_category: Callable[[str], bool]
    ) -> None:
        self.is_reason_code = is_reason_code
        self.is_category = is_category


def validate_record(doc: Any, vocabulary: Vocabulary) -> dict[str, Any]:
    """Check one shipped record; return it normalised (every field, `time` a datetime).

    Unknown fields are ignored, not refused: a newer proxy adding a field must not make an
    older registry reject every record it ships. Raise `RecordError` naming the bad field.
    The path is redacted again from the record's own findings (records of older proxies).
    """
    if not isinstance(doc, Mapping):
        raise RecordError("record", "expected an object")
    out: dict[str, Any] = {}
    for spec in FIELDS:
        value = doc.get(spec.name)
        if value is None:
            if spec.required:
                raise RecordError(spec.name, "field required")
            out[spec.name] = list(spec.default) if isinstance(spec.default, tuple) else spec.default
            continue
        out[spec.name] = _CHECKS[spec.kind](spec, value)
    _check_ids(out, vocabulary)
    if not out["reasons"] and out["reason_codes"]:  # a record of a proxy before `reasons`
        out["reasons"] = [{"code": c} for c in out["reason_codes"]]
    out["reason_codes"] = list(dict.fromkeys(r["code"] for r in out["reasons"]))
    out["categories"] = list(dict.fromkeys(out["categories"]))
    out["path"] = redact_path(out["path"], out["findings"])
    return out


def _check_ids(out: dict[str, Any], vocabulary: Vocabulary) -> None:
    if not _ID_RE.match(out["decision_id"]):
        raise RecordError("decision_id", "expected 1-64 letters, digits or _.:-")
    if out["fault"] is not None and not _FAULT_RE.match(out["fault"]):
        raise RecordError("fault", "expected a fault code (lower-case letters, digits, _)")
    if out["status"] is not None and not 100 <= out["status"] <= 599:
        raise RecordError("status", "expected an HTTP status (100-599)")
    unknown = [c for c in out["reason_codes"] if not vocabulary.is_reason_code(c)]
    unknown += [r["code"] for r in out["reasons"] if not vocabulary.is_reason_code(r["code"])]
    if unknown:
        raise RecordError("reason_codes", f"unknown reason codes {sorted(set(unknown))}")
    categories = list(out["categories"])
    categories += [r["category"] for r in out["reasons"] if r.get("category")]
    unknown = [c for c in categories if not vocabulary.is_category(c)]
    if unknown:
        raise RecordError("categories", f"unknown categories {sorted(set(unknown))}")


def _str(spec: RecordField, value: Any) -> str:
    if not isinstance(value, str):
        raise RecordError(spec.name, "expected a string")
    if spec.max_length is not None and len(value) > spec.max_length:
        raise RecordError(spec.name, f"longer than {spec.max_length} characters")
    if spec.choices and value not in spec.choices:
        raise RecordError(spec.name, f"expected one of {list(spec.choices)}")
    return value


def _int(spec: RecordField, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise RecordError(spec.name, "expected an integer")
    return value


def _float(spec: RecordField, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RecordError(spec.name, "expected a number")
    return float(value)


def _bool(spec: RecordField, value: Any) -> bool:
    if not isinstance(value, bool):
        raise RecordError(spec.name, "expected true or false")
    return value


def _time(spec: RecordField, value: Any) -> datetime:
    if not isinstance(value, str):
        raise RecordError(spec.name, "expected an ISO 8601 time")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise RecordError(spec.name, "expected an ISO 8601 time") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _list(spec: RecordField, value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise RecordError(spec.name, "expected a list")
    if spec.max_length is not None and len(value) > spec.max_length:
        raise RecordError(spec.name, f"more than {spec.max_length} items")
    return value


def _strs(spec: RecordField, value: Any) -> list[str]:
    items = _list(spec, value)
    if not all(isinstance(v, str) and len(v) <= 500 for v in items):
        raise RecordError(spec.name, "expected a list of strings")
    return list(items)


def _object_list(
    spec: RecordField, value: Any, keys: tuple[str, ...], required: str
) -> list[dict[str, str]]:
    out = []
    for index, item in enumerate(_list(spec, value)):
        if not isinstance(item, Mapping) or not isinstance(item.get(required), str):
            raise RecordError(f"{spec.name}.{index}", f"expected an object with {required!r}")
        kept = {}
        for key in keys:
            v = item.get(key)
            if v is None:
                continue
            if not isinstance(v, str) or len(v) > 500:
                raise RecordError(f"{spec.name}.{index}.{key}", "expected a short string")
            kept[key] = v
        out.append(kept)
    return out


def _reasons(spec: RecordField, value: Any) -> list[dict[str, str]]:
    # The message is the taxonomy's (the registry looks it up): only code and category are kept.
    return _object_list(spec, value, ("code", "category"), "code")


def _findings(spec: RecordField, value: Any) -> list[dict[str, str]]:
    found = _object_list(spec, value, ("category", "location", "detector"), "category")
    return [{"location": "", "detector": "", **f} for f in found]


_CHECKS: dict[str, Callable[[RecordField, Any], Any]] = {
    "str": _str,
    "int": _int,
    "float": _float,
    "bool": _bool,
    "time": _time,
    "strs": _strs,
    "reasons": _reasons,
    "findings": _findings,
}

_SCHEMA_TYPES: dict[str, dict[str, Any]] = {
    "str": {"type": "string"},
    "int": {"type": "integer"},
    "float": {"type": "number"},
    "bool": {"type": "boolean"},
    "time": {"type": "string", "format": "date-time"},
    "strs": {"type": "array", "items": {"type": "string"}},
    "reasons": {
        "type": "array",
        "items": {
            "type": "object",
            "required": ["code"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "category": {"type": "string"},
            },
        },
    },
    "findings": {
        "type": "array",
        "items": {
            "type": "object",
            "required": ["category"],
            "properties": {
                "category": {"type": "string"},
                "location": {"type": "string"},
                "detector": {"type": "string"},
            },
        },
    },
}


def record_schema() -> dict[str, Any]:
    """The JSON Schema of a record (for the registry's OpenAPI document)."""
    properties: dict[str, Any] = {}
    for spec in FIELDS:
        schema = dict(_SCHEMA_TYPES[spec.kind], description=spec.description)
        if spec.choices:
            schema["enum"] = list(spec.choices)
        if spec.max_length is not None:
            schema["maxLength" if spec.kind == "str" else "maxItems"] = spec.max_length
        if spec.nullable and not spec.required:
            schema = {"anyOf": [schema, {"type": "null"}], "description": spec.description}
        properties[spec.name] = schema
    return {
        "type": "object",
        "title": "DecisionRecord",
        "required": [f.name for f in FIELDS if f.required],
        "properties": properties,
        "additionalProperties": True,
    }
