"""The state of one inspection: findings so far, problems, and the limits being spent."""

from __future__ import annotations

import time

from proxy.inspect.model import (
    TIMED_OUT,
    TOO_DEEP,
    TOO_MANY_FIELDS,
    Finding,
    Inspection,
    InspectionLimits,
)
from sharewall.hosts import BadAuthority, split_hostport, split_url

# Check the clock once every this many fields: `perf_counter()` is cheap, not free.
_CLOCK_MASK = 63


class ScanStopped(Exception):
    """Raised inside a scan when a limit ends it; the problem is already recorded."""


class Scan:
    """Collects findings (deduplicated by category and location) and problems for one call."""

    # `_native.c` reads and writes `fields`, `next_check`, `recording` and `_findings` in place
    # (what `count_field` and `add` do): keep them object slots, or change both.
    __slots__ = (
        "_deadline",
        "_findings",
        "_host",
        "_problems",
        "fields",
        "grpc_encoding",
        "layers",
        "limits",
        "memo",
        "mobile_call",
        "next_check",
        "recording",
        "regions",
        "url",
    )

    def __init__(self, limits: InspectionLimits, url: str = "") -> None:
        self.limits = limits
        self.url = url
        self._host: str | None = None
        self.grpc_encoding = ""  # the call's `grpc-encoding` (compressed gRPC frames)
        self.layers = 0  # encodings being undone around the current field (see encoded.py)
        self.mobile_call = False  # the URL is an HLR / number-lookup endpoint (set by the caller)
        # Fields spent so far; the walker's hot loop counts inline and calls `checkpoint()` when
        # `fields` reaches `next_check` (the next clock check or the field limit, whichever first).
        self.fields = 0
        self._findings: dict[tuple[str, str], str] = {}  # (category, location) → detector
        self._problems: list[str] = []
        # (rule, context, value) → findings, for this call only (see fields.scan_scalar).
        self.memo: dict[tuple[object, ...], tuple[tuple[str, str], ...]] = {}
        self.recording: list[tuple[str, str]] | None = None
        # What the limits give every scan (the phone regions, the first check), worked out once
        # per limits object: one per configuration.
        start = _start
        if start[0] is not limits:
            start = _start_of(limits)
        _, self.regions, self.next_check, max_seconds = start
        self._deadline = time.perf_counter() + max_seconds

    @property
    def host(self) -> str:
        """The call's host name, lower case (parsed on first use: only credentials need it)."""
        if self._host is None:
            # The one URL splitter (sharewall.hosts), as the proxy parsed the target with.
            authority = split_url(self.url).authority or ""
            try:
                host, _port = split_hostport(authority.rpartition("@")[2])
            except BadAuthority:
                host = ""
            self._host = host.lower().rstrip(".")
        return self._host

    def add(self, category: str, location: str, detector: str) -> None:
        """Record a finding; the first detector to find a (category, location) wins."""
        if self.recording is not None:
            self.recording.append((category, detector))
        # Plain tuples here, `Finding`s in `result()`: a batch adds thousands of findings.
        self._findings.setdefault((category, location), detector)

    def problem(self, code: str) -> None:
        """Record a problem code once."""
        if code not in self._problems:
            self._problems.append(code)

    def count_field(self) -> None:
        """Spend one field of the budget; stop the scan past the field limit or the deadline."""
        fields = self.fields = self.fields + 1
        if fields >= self.next_check:
            self.checkpoint()

    def checkpoint(self) -> None:
        """`fields` reached `next_check`: stop past the field limit, else check the clock."""
        fields = self.fields
        max_fields = self.limits.max_fields
        if fields > max_fields:
            self.problem(TOO_MANY_FIELDS)
            raise ScanStopped
        self.next_check = min((fields | _CLOCK_MASK) + 1, max_fields + 1)
        if fields & _CLOCK_MASK == 0:
            self.check_time()

    def check_time(self) -> None:
        """Stop the scan once the time budget is spent."""
        if time.perf_counter() > self._deadline:
            self.problem(TIMED_OUT)
            raise ScanStopped

    def too_deep(self, depth: int) -> bool:
        """True (and a `too_deep` problem) when `depth` is past the nesting limit."""
        if depth > self.limits.max_depth:
            self.problem(TOO_DEEP)
            return True
        return False

    def result(self) -> Inspection:
        """The findings (in the order found) and problems as an `Inspection`."""
        # Built as `_findings` builds a `Finding` (the slots set directly): one per call.
        inspection = _new_finding(Inspection)
        findings, categories = _findings(self._findings)
        _set_findings(inspection, findings)
        _set_categories(inspection, categories)
        _set_problems(inspection, tuple(self._problems))
        return inspection


def _start_of(limits: InspectionLimits) -> tuple[InspectionLimits, tuple[str, ...], int, float]:
    """What a `Scan` starts from under `limits`, kept for the next scan (the limits held, so its
    identity is not reused)."""
    global _start
    _start = (
        limits,
        (limits.default_region, *limits.extra_phone_regions),
        min(_CLOCK_MASK + 1, limits.max_fields + 1),
        limits.max_seconds,
    )
    return _start


_start: tuple[InspectionLimits | None, tuple[str, ...], int, float] = (None, (), 0, 0.0)


# A frozen dataclass's `__init__` sets each field through `object.__setattr__` from Python code;
# a batch has thousands of findings, so they are built with the slot descriptors directly (half
# the cost). The result is an ordinary, equal, frozen `Finding`.
_new_finding = object.__new__
_set_category = Finding.category.__set__  # type: ignore[attr-defined]
_set_location = Finding.location.__set__  # type: ignore[attr-defined]
_set_detector = Finding.detector.__set__  # type: ignore[attr-defined]
_set_findings = Inspection.findings.__set__  # type: ignore[attr-defined]
_set_problems = Inspection.problems.__set__  # type: ignore[attr-defined]
_set_categories = Inspection.categories.__set__  # type: ignore[attr-defined]


def _findings(found: dict[tuple[str, str], str]) -> tuple[tuple[Finding, ...], frozenset[str]]:
    """The `Finding`s of `found`, in its order, and their categories."""
    out = []
    append = out.append
    for (category, location), detector in found.items():
        finding = _new_finding(Finding)
        _set_category(finding, category)
        _set_location(finding, location)
        _set_detector(finding, detector)
        append(finding)
    return tuple(out), frozenset(category for category, _ in found)
