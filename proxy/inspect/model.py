"""Values produced by payload inspection: findings, problems, limits."""

from __future__ import annotations

from dataclasses import dataclass, field
from operator import attrgetter

# The limits live with the settings (proxy/inspection_limits.py); importable from here too.
from proxy.inspection_limits import InspectionLimits

# Problem codes (stable; they travel in `input.inspection.problems` and in logs).
BODY_TOO_LARGE = "body_too_large"
DECOMPRESSED_TOO_LARGE = "decompressed_too_large"
TOO_DEEP = "too_deep"
TOO_MANY_FIELDS = "too_many_fields"
TIMED_OUT = "timed_out"
UNSUPPORTED_ENCODING = "unsupported_encoding"  # unknown Content-Encoding
UNDECODABLE = "undecodable"  # corrupt compressed stream or undecodable charset
MALFORMED_JSON = "malformed_json"  # declared JSON, scanned as text instead
MALFORMED_XML = "malformed_xml"
MALFORMED_MULTIPART = "malformed_multipart"
FORBIDDEN_XML = "forbidden_xml"  # DTD / entity declarations refused by defusedxml
INSPECTOR_ERROR = "inspector_error"  # a bug in a detector: fail closed

# Problems after which the scan did not see every byte: the decision sees `complete: false`.
INCOMPLETE_PROBLEMS = frozenset(
    {
        BODY_TOO_LARGE,
        DECOMPRESSED_TOO_LARGE,
        TOO_DEEP,
        TOO_MANY_FIELDS,
        TIMED_OUT,
        UNSUPPORTED_ENCODING,
        UNDECODABLE,
        FORBIDDEN_XML,
        INSPECTOR_ERROR,
    }
)


@dataclass(frozen=True, slots=True)
class Finding:
    """One piece of personal data: its category, where it was (never its value), who found it."""

    category: str
    location: str  # e.g. "form:To", "json:$.recipients[3].phone", "header:x-msisdn"
    detector: str  # e.g. "phone", "email", "key:sms_consent"

    def as_dict(self) -> dict[str, str]:
        return {"category": self.category, "location": self.location, "detector": self.detector}


_CATEGORY = attrgetter("category")


@dataclass(frozen=True, slots=True)
class Inspection:
    """The result of inspecting one call: findings and whether every byte was inspected."""

    findings: tuple[Finding, ...] = ()
    problems: tuple[str, ...] = ()
    # The findings' categories (the decision cache's key, the policy's input), read on every
    # call: worked out when the inspection is made (`Scan.result` sets it with the findings).
    categories: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "categories", frozenset(map(_CATEGORY, self.findings)))

    @property
    def complete(self) -> bool:
        return not any(p in INCOMPLETE_PROBLEMS for p in self.problems)

    @property
    def fault(self) -> str | None:
        """`inspector_error` when a detector failed: a fault of ours (503), not a policy denial."""
        return INSPECTOR_ERROR if INSPECTOR_ERROR in self.problems else None

    def as_policy_input(self) -> dict[str, object]:
        return {"complete": self.complete, "problems": sorted(set(self.problems))}


DEFAULT_LIMITS = InspectionLimits()
