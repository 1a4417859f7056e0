"""Prometheus metrics of the proxy, in their own registry (names are constants, in one place)."""

from __future__ import annotations

import math
from bisect import bisect_left
from itertools import accumulate
from typing import Any

from prometheus_client import CollectorRegistry, Counter, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

# Latency buckets in seconds: the policy is sub-millisecond, upstreams take up to seconds.
_FAST = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
_SLOW = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class ProxyMetrics:
    """The proxy's metrics; one instance per process, exposed by the admin listener."""

    def __init__(self) -> None:
        # `*_created` series double the scrape size and nobody graphs them.
        disable_created_metrics()
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        # The series every call moves are plain numbers kept by the event loop (their only
        # writer) and read at scrape time: prometheus_client's own take a lock per update
        # (nine per call here). Same names, help, labels and buckets as the library's types.
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
        r.register(_HotPathCollector(self))
        self.snapshot_reloads = Counter(
            "sharewall_snapshot_reloads",
            "Registry snapshot loads by result (ok, failed).",
            ["result"],
            registry=r,
        )
        self.clients_refused = Counter(
            "sharewall_clients_refused",
            "Gateway clients refused (--client-ca) by reason (handshake, no_workload).",
            ["reason"],
            registry=r,
        )

    def watch_decider(self, decider: object) -> None:
        """Expose the decider's cache counters (`cache_hits`, `cache_misses`) if it has them."""
        self.registry.register(_DeciderCollector(decider))

    def watch_spool(self, spool: object) -> None:
        """Expose the spool's state and counters (it owns them; read at scrape time)."""
        self.registry.register(_SpoolCollector(spool))

    def watch_shipper(self, shipper: object) -> None:
        """Expose the shipper's counters, foreign segments included."""
        self.registry.register(_ShipperCollector(shipper))

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

    def family(self) -> HistogramMetricFamily:
        cumulative = accumulate(self.counts)
        return HistogramMetricFamily(
            self.name,
            self.doc,
            buckets=[(floatToGoString(b), c) for b, c in zip(self.bounds, cumulative, strict=True)],
            sum_value=self.sum,
        )


class _HotPathCollector(Collector):
    """The per-call series (`_Buckets`, `_Level`, decisions by action and reason)."""

    def __init__(self, metrics: ProxyMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Any:
        m = self._metrics
        decisions = CounterMetricFamily(
            "sharewall_decisions",
            "Decisions by effective action and reason code (reason 'none' when allowed).",
            labels=["action", "reason"],
        )
        for (action, reason), count in list(m._decision_counts.items()):
            decisions.add_metric([action, reason], count)
        yield decisions
        for histogram in (m.inspect_seconds, m.policy_seconds, m.upstream_seconds):
            yield histogram.family()
        for level in (m.inflight, m.open_tunnels, m.open_connections):
            yield GaugeMetricFamily(level.name, level.doc, value=level.value)

    def describe(self) -> Any:
        return []


class _DeciderCollector(Collector):
    """Reads the decider's own counters at scrape time (it owns them; we only expose them)."""

    def __init__(self, decider: object) -> None:
        self._decider = decider

    def collect(self) -> Any:
        for attr, name in (("cache_hits", "hits"), ("cache_misses", "misses")):
            value = getattr(self._decider, attr, None)
            if isinstance(value, int):
                yield CounterMetricFamily(
                    f"sharewall_decision_cache_{name}",
                    f"Decision cache {name}.",
                    value=value,
                )

    def describe(self) -> Any:
        return []


class _SpoolCollector(Collector):
    """The spool's writability and its write counters."""

    def __init__(self, spool: Any) -> None:
        self._spool = spool

    def collect(self) -> Any:
        spool = self._spool
        yield GaugeMetricFamily(
            "sharewall_spool_writable",
            "1 when the spool takes records; 0 while refused calls are answered 503.",
            value=0 if spool.problem else 1,
        )
        for attr, name, doc in (
            ("records_written", "records_written", "Records written and fsync'd to the spool."),
            ("fsyncs", "fsyncs", "Spool fsyncs (records of a few ms share one)."),
            ("write_failures", "write_failures", "Failed spool writes (disk full, I/O error)."),
            ("records_refused", "records_refused", "Refusals answered 503: no record on disk."),
            ("records_dropped", "records_dropped", "Unawaited records dropped (backlog full)."),
        ):
            yield CounterMetricFamily(f"sharewall_spool_{name}", doc, value=getattr(spool, attr))

    def describe(self) -> Any:
        return []


class _ShipperCollector(Collector):
    """Decisions shipped, and segments kept because another registry's."""

    def __init__(self, shipper: Any) -> None:
        self._shipper = shipper

    def collect(self) -> Any:
        yield CounterMetricFamily(
            "sharewall_shipped_decisions",
            "Decision records the registry acknowledged.",
            value=self._shipper.shipped_decisions,
        )
        yield GaugeMetricFamily(
            "sharewall_spool_foreign_segments",
            "Spool segments written for another registry (kept, never shipped here).",
            value=len(self._shipper.foreign_segments),
        )

    def describe(self) -> Any:
        return []
