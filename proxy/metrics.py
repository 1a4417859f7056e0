"""Prometheus metrics of the proxy, in their own registry (names are constants, in one place)."""

from __future__ import annotations

from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

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
        self.decisions = Counter(
            "sharewall_decisions",
            "Decisions by effective action and reason code (reason 'none' when allowed).",
            ["action", "reason"],
            registry=r,
        )
        self.inspect_seconds = Histogram(
            "sharewall_inspection_seconds", "Payload inspection time.", buckets=_FAST, registry=r
        )
        self.policy_seconds = Histogram(
            "sharewall_policy_seconds", "Policy decision time.", buckets=_FAST, registry=r
        )
        self.upstream_seconds = Histogram(
            "sharewall_upstream_seconds",
            "Time to the upstream's response head.",
            buckets=_SLOW,
            registry=r,
        )
        self.inflight = Gauge(
            "sharewall_inflight_requests", "Calls being decided or streamed.", registry=r
        )
        self.open_tunnels = Gauge(
            "sharewall_open_tunnels", "Spliced CONNECT tunnels open.", registry=r
        )
        self.open_connections = Gauge(
            "sharewall_open_connections", "Client connections open.", registry=r
        )
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
        # `.labels()` validates and hashes its arguments under a lock on every call: the hot
        # path keeps the child counter of each (action, reason) it has seen.
        self._decision_children: dict[tuple[str, str], Any] = {}

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
        codes = record.get("reason_codes") or []
        if record.get("fault"):
            codes = [f"fault:{record['fault']}"]
        for code in codes or ["none"]:
            child = self._decision_children.get((action, code))
            if child is None:
                child = self.decisions.labels(action=action, reason=code)
                self._decision_children[(action, code)] = child
            child.inc()
        for key, hist in (
            ("inspect_ms", self.inspect_seconds),
            ("policy_ms", self.policy_seconds),
            ("upstream_ms", self.upstream_seconds),
        ):
            value = record.get(key)
            if value is not None:
                hist.observe(value / 1000.0)


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
