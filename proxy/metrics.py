"""Prometheus metrics of the proxy (names are constants, in one place), through prometheus_client.

Every series is a plain number the event loop moves (its only writer): prometheus_client's
own `Counter`/`Histogram` take a lock per update, nine a call here. At scrape time one
collector of ours turns those numbers into prometheus_client's metric families, written in
the format the scrape asks for (`proxy.prometheus.expose`: OpenMetrics for Prometheus,
the text format 0.0.4 for curl).

prometheus_client comes through `proxy.prometheus`, which imports its parts without the
package's `__init__` (http.server, wsgiref, urllib.request, email: ~3 MB; bench/README.md).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from itertools import accumulate
from typing import Any

from proxy.prometheus import (
    Collector,
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    expose,
    floatToGoString,
)

# Latency buckets in seconds: the policy is sub-millisecond, upstreams take up to seconds.
_FAST = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
_SLOW = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

Families = Callable[[], Iterable[Metric]]


class ProxyMetrics:
    """The proxy's metrics; one instance per process, exposed by the admin listener."""

    def __init__(self) -> None:
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
        self._collector = _ScrapeCollector(
            [self._hot_path, self.snapshot_reloads.families, self.clients_refused.families]
        )
        self.registry = CollectorRegistry()
        self.registry.register(self._collector)

    def exposition(self, accept: str | None = None) -> tuple[str, bytes]:
        """(Content-Type, body): every series, in the format `accept` asks for (none: text 0.0.4)."""
        return expose(self.registry, accept)

    def _hot_path(self) -> Iterator[Metric]:
        decisions = CounterMetricFamily(
            "sharewall_decisions",
            "Decisions by effective action and reason code (reason 'none' when allowed).",
            labels=("action", "reason"),
        )
        for (action, reason), count in list(self._decision_counts.items()):
            decisions.add_metric((action, reason), count)
        yield decisions
        for histogram in (self.inspect_seconds, self.policy_seconds, self.upstream_seconds):
            yield histogram.family()
        for level in (self.inflight, self.open_tunnels, self.open_connections):
            yield GaugeMetricFamily(level.name, level.doc, value=level.value)

    def watch_decider(self, decider: object) -> None:
        """Expose the decider's cache counters (`cache_hits`, `cache_misses`) if it has them."""

        def families() -> Iterator[Metric]:
            for attr, name in (("cache_hits", "hits"), ("cache_misses", "misses")):
                value = getattr(decider, attr, None)
                if isinstance(value, int):
                    yield CounterMetricFamily(
                        f"sharewall_decision_cache_{name}", f"Decision cache {name}.", value=value
                    )

        self._collector.sources.append(families)

    def watch_spool(self, spool: Any) -> None:
        """Expose the spool's state and counters (it owns them; read at scrape time)."""

        def families() -> Iterator[Metric]:
            yield GaugeMetricFamily(
                "sharewall_spool_writable",
                "1 when the spool takes records; 0 while refused calls are answered 503.",
                value=0 if spool.problem else 1,
            )
            for name, doc in _SPOOL_COUNTERS:
                yield CounterMetricFamily(
                    f"sharewall_spool_{name}", doc, value=getattr(spool, name)
                )

        self._collector.sources.append(families)

    def watch_log_lines(self, lines: Any) -> None:
        """Expose the stdout `LineWriter`'s buffer (calls are refused while it is full)."""

        def families() -> Iterator[Metric]:
            yield GaugeMetricFamily(
                "sharewall_log_buffered_bytes",
                "Log line bytes waiting for stdout's reader (calls are refused 503 past the limit).",
                value=lines.pending_bytes,
            )
            yield CounterMetricFamily(
                "sharewall_log_lines_shed",
                "Lines of log_unavailable refusals shed past twice the limit (their records are spooled).",
                value=lines.shed_lines,
            )

        self._collector.sources.append(families)

    def watch_shipper(self, shipper: Any) -> None:
        """Expose the shipper's counters, foreign segments and refusals included."""

        def families() -> Iterator[Metric]:
            yield CounterMetricFamily(
                "sharewall_shipped_decisions",
                "Decision records the registry acknowledged.",
                value=shipper.shipped_decisions,
            )
            yield GaugeMetricFamily(
                "sharewall_spool_foreign_segments",
                "Spool segments written for another registry (kept, never shipped here).",
                value=len(shipper.foreign_segments),
            )

        self._collector.sources.append(families)
        self.watch_refusals(
            shipper.refusals,
            "sharewall_shipper_refusals",
            "sharewall_shipping_refused",
            "shipments",
        )

    def watch_refusals(self, refusals: Any, counter: str, gauge: str, what: str) -> None:
        """Expose a `proxy.registry_token.Refusals`: `counter` (refusals by reason) and
        `gauge` (1 on the current refusal's reason, 0 on those of refusals past)."""

        def families() -> Iterator[Metric]:
            counts = CounterMetricFamily(
                counter,
                f"Registry refusals (401, 403) of this proxy's {what}, by reason code.",
                labels=("reason",),
            )
            now = GaugeMetricFamily(
                gauge,
                f"1 while the registry refuses this proxy's {what}, on its reason code (0 on "
                "the reasons of refusals past).",
                labels=("reason",),
            )
            current = refusals.current.reason if refusals.current is not None else None
            for reason, count in list(refusals.counts.items()):
                counts.add_metric((reason,), count)
                now.add_metric((reason,), 1 if reason == current else 0)
            yield counts
            yield now

        self._collector.sources.append(families)

    def watch_token_expiry(self, expiry: Any) -> None:
        """Expose when the registry token expires (`proxy.registry_token`), if it does."""

        def families() -> Iterator[Metric]:
            if expiry.expires_at is not None:
                yield GaugeMetricFamily(
                    "sharewall_registry_token_expiry_timestamp_seconds",
                    "When the registry says this proxy's token stops authenticating (it was "
                    "rotated), Unix seconds; absent when it does not expire.",
                    value=expiry.expires_at.timestamp(),
                )

        self._collector.sources.append(families)

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


class _ScrapeCollector(Collector):
    """prometheus_client's collector over our numbers: each source's families, in order."""

    def __init__(self, sources: list[Families]) -> None:
        self.sources = sources

    def collect(self) -> Iterator[Metric]:
        for families in self.sources:
            yield from families()


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

    def family(self) -> HistogramMetricFamily:
        cumulative = accumulate(self.counts)
        return HistogramMetricFamily(
            self.name,
            self.doc,
            buckets=[(floatToGoString(b), c) for b, c in zip(self.bounds, cumulative, strict=True)],
            sum_value=self.sum,
        )


class _LabelledCounter:
    """A counter with one label, `.labels(label=value).inc()` as prometheus_client's."""

    __slots__ = ("counts", "doc", "label", "name")

    def __init__(self, name: str, doc: str, label: str) -> None:
        self.name, self.doc, self.label = name, doc, label
        self.counts: dict[str, float] = {}

    def labels(self, **value: str) -> _Child:
        return _Child(self, value[self.label])

    def families(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.doc, labels=(self.label,))
        for value, count in list(self.counts.items()):
            family.add_metric((value,), count)
        yield family


class _Child:
    __slots__ = ("counter", "value")

    def __init__(self, counter: _LabelledCounter, value: str) -> None:
        self.counter, self.value = counter, value

    def inc(self, amount: float = 1) -> None:
        counts = self.counter.counts
        counts[self.value] = counts.get(self.value, 0) + amount


_SPOOL_COUNTERS = (
    ("records_written", "Records written to the spool (a refusal's fsync'd before its answer)."),
    ("fsyncs", "Spool fsyncs (records of a few ms share one)."),
    ("write_failures", "Failed spool writes (disk full, I/O error)."),
    ("records_refused", "Refusals answered 503: no record on disk."),
    ("records_dropped", "Unawaited records dropped (backlog full)."),
)
