"""Prometheus metrics of the proxy (names are constants, in one place), in the text format.

Every series is a plain number the event loop moves (its only writer) and the scrape reads;
`ProxyMetrics.exposition()` writes them in Prometheus' text format 0.0.4, the text
`prometheus_client.generate_latest` writes (the tests read it back with prometheus_client's
parser). prometheus_client itself is not imported by the proxy: after aiohttp it was the
sidecar's largest import left, ~3.3 MB of idle RSS and ~15 ms of start (its exposition
module loads http.server, wsgiref, urllib.request and email), for a registry and a
formatter the proxy used beside its own counters.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable, Iterable
from itertools import accumulate
from typing import Any

# Latency buckets in seconds: the policy is sub-millisecond, upstreams take up to seconds.
_FAST = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
_SLOW = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class ProxyMetrics:
    """The proxy's metrics; one instance per process, exposed by the admin listener."""

    def __init__(self) -> None:
        # The series every call moves are plain numbers kept by the event loop and read at
        # scrape time (a lock per update, as prometheus_client's types take, is nine a call).
        self._decision_counts: dict[tuple[str, str], int] = {}
        self.inspect_seconds = _Buckets(
            "sharewall_inspection_seconds", "Payload inspection time.", _FAST
        )
        self.policy_seconds = _Buckets("sharewall_policy_seconds", "Policy decision time.", _FAST)
        self.upstream_seconds = _Buckets(
            "sharewall_upstream_seconds", "Time to the upstream's response head.", _SLOW
        )
        self.inflight = _Level("sharewall_inflight_requests", "Calls being decided or streamed.")
        self.open_tunnels = _Level("sharewall_open_tunnels", "Spliced CONNECT tunnels open.")
        self.open_connections = _Level("sharewall_open_connections", "Client connections open.")
        self.snapshot_reloads = _LabelledCounter(
            "sharewall_snapshot_reloads",
            "Registry snapshot loads by result (ok, failed).",
            "result",
        )
        self.clients_refused = _LabelledCounter(
            "sharewall_clients_refused",
            "Gateway clients refused (--client-ca) by reason (handshake, no_workload).",
            "reason",
        )
        # Families in exposition order: the hot path's, then what `watch_*` adds.
        self._writers: list[Callable[[list[str]], None]] = [
            self._write_hot_path,
            self.snapshot_reloads.write,
            self.clients_refused.write,
        ]

    def exposition(self) -> bytes:
        """Every series in Prometheus' text exposition format (version 0.0.4)."""
        out: list[str] = []
        for write in self._writers:
            write(out)
        return "".join(out).encode("utf-8")

    def _write_hot_path(self, out: list[str]) -> None:
        _family(
            out,
            "sharewall_decisions",
            "Decisions by effective action and reason code (reason 'none' when allowed).",
            "counter",
            [
                (f'{{action="{_label(a)}",reason="{_label(r)}"}}', n)
                for (a, r), n in list(self._decision_counts.items())
            ],
        )
        for histogram in (self.inspect_seconds, self.policy_seconds, self.upstream_seconds):
            histogram.write(out)
        for level in (self.inflight, self.open_tunnels, self.open_connections):
            _family(out, level.name, level.doc, "gauge", [("", level.value)])

    def watch_decider(self, decider: object) -> None:
        """Expose the decider's cache counters (`cache_hits`, `cache_misses`) if it has them."""

        def write(out: list[str]) -> None:
            for attr, name in (("cache_hits", "hits"), ("cache_misses", "misses")):
                value = getattr(decider, attr, None)
                if isinstance(value, int):
                    _family(
                        out,
                        f"sharewall_decision_cache_{name}",
                        f"Decision cache {name}.",
                        "counter",
                        [("", value)],
                    )

        self._writers.append(write)

    def watch_spool(self, spool: Any) -> None:
        """Expose the spool's state and counters (it owns them; read at scrape time)."""

        def write(out: list[str]) -> None:
            _family(
                out,
                "sharewall_spool_writable",
                "1 when the spool takes records; 0 while refused calls are answered 503.",
                "gauge",
                [("", 0 if spool.problem else 1)],
            )
            for name, doc in _SPOOL_COUNTERS:
                _family(
                    out, f"sharewall_spool_{name}", doc, "counter", [("", getattr(spool, name))]
                )

        self._writers.append(write)

    def watch_shipper(self, shipper: Any) -> None:
        """Expose the shipper's counters, foreign segments included."""

        def write(out: list[str]) -> None:
            _family(
                out,
                "sharewall_shipped_decisions",
                "Decision records the registry acknowledged.",
                "counter",
                [("", shipper.shipped_decisions)],
            )
            _family(
                out,
                "sharewall_spool_foreign_segments",
                "Spool segments written for another registry (kept, never shipped here).",
                "gauge",
                [("", len(shipper.foreign_segments))],
            )

        self._writers.append(write)

    def observe_record(self, record: dict[str, Any]) -> None:
        """Count one decision record (a `DecisionLog` sink)."""
        action = "would_block" if record.get("would_block") else record["action"]
        codes = record.get("reason_codes") or _NONE
        if record.get("fault"):
            codes = [f"fault:{record['fault']}"]
        counts = self._decision_counts
        for code in codes:
            key = (action, code)
            counts[key] = counts.get(key, 0) + 1
        value = record.get("inspect_ms")
        if value is not None:
            self.inspect_seconds.observe(value / 1000.0)
        value = record.get("policy_ms")
        if value is not None:
            self.policy_seconds.observe(value / 1000.0)
        value = record.get("upstream_ms")
        if value is not None:
            self.upstream_seconds.observe(value / 1000.0)


_NONE = ("none",)


class _Level:
    """A gauge moved by the event loop only: an int, read at scrape time."""

    __slots__ = ("doc", "name", "value")

    def __init__(self, name: str, doc: str) -> None:
        self.name, self.doc, self.value = name, doc, 0

    def inc(self, amount: int = 1) -> None:
        self.value += amount

    def dec(self, amount: int = 1) -> None:
        self.value -= amount

    def set(self, value: int) -> None:
        self.value = value


class _Buckets:
    """A histogram observed by the event loop only: a count per bucket and the sum."""

    __slots__ = ("bounds", "counts", "doc", "name", "sum")

    def __init__(self, name: str, doc: str, bounds: tuple[float, ...]) -> None:
        self.name, self.doc = name, doc
        self.bounds = (*bounds, math.inf)
        self.counts = [0] * len(self.bounds)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        # The first bucket whose upper bound holds the value (`le`), as prometheus_client does.
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def write(self, out: list[str]) -> None:
        cumulative = list(accumulate(self.counts))
        _family(out, self.name, self.doc, "histogram", ())
        name = self.name
        for bound, count in zip(self.bounds, cumulative, strict=True):
            out.append(f'{name}_bucket{{le="{_number(bound)}"}} {_number(count)}\n')
        out.append(f"{name}_count {_number(cumulative[-1])}\n")
        out.append(f"{name}_sum {_number(self.sum)}\n")


class _LabelledCounter:
    """A counter with one label, `.labels(label=value).inc()` as prometheus_client's."""

    __slots__ = ("counts", "doc", "label", "name")

    def __init__(self, name: str, doc: str, label: str) -> None:
        self.name, self.doc, self.label = name, doc, label
        self.counts: dict[str, float] = {}

    def labels(self, **value: str) -> _Child:
        return _Child(self, value[self.label])

    def write(self, out: list[str]) -> None:
        _family(
            out,
            self.name,
            self.doc,
            "counter",
            [(f'{{{self.label}="{_label(v)}"}}', n) for v, n in self.counts.items()],
        )


class _Child:
    __slots__ = ("counter", "value")

    def __init__(self, counter: _LabelledCounter, value: str) -> None:
        self.counter, self.value = counter, value

    def inc(self, amount: float = 1) -> None:
        counts = self.counter.counts
        counts[self.value] = counts.get(self.value, 0) + amount


_SPOOL_COUNTERS = (
    ("records_written", "Records written and fsync'd to the spool."),
    ("fsyncs", "Spool fsyncs (records of a few ms share one)."),
    ("write_failures", "Failed spool writes (disk full, I/O error)."),
    ("records_refused", "Refusals answered 503: no record on disk."),
    ("records_dropped", "Unawaited records dropped (backlog full)."),
)


def _family(
    out: list[str],
    name: str,
    doc: str,
    kind: str,
    samples: Iterable[tuple[str, float]],
) -> None:
    """`# HELP`, `# TYPE` and `name{labels} value` lines (a counter's samples end in `_total`)."""
    if kind == "counter":
        name += "_total"
    help_text = doc.replace("\\", "\\\\").replace("\n", "\\n")
    out.append(f"# HELP {name} {help_text}\n")
    out.append(f"# TYPE {name} {kind}\n")
    for labels, value in samples:
        out.append(f"{name}{labels} {_number(value)}\n")


def _label(value: str) -> str:
    """A label value escaped for the text format (backslash, double quote, newline)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    """A sample value as Go (and prometheus_client) writes it: 1.0, 0.25, 1.234567e+06, +Inf."""
    value = float(value)
    if value == math.inf:
        return "+Inf"
    if value == -math.inf:
        return "-Inf"
    if math.isnan(value):
        return "NaN"
    text = repr(value)
    dot = text.find(".")
    if value > 0 and dot > 6:  # Go switches to an exponent sooner than Python's repr
        mantissa = f"{text[0]}.{text[1:dot]}{text[dot + 1 :]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    return text
