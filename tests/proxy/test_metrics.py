"""The proxy's /metrics: every series by name, HELP, labels and buckets, readable by Prometheus."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.utils import floatToGoString

from proxy.metrics import ProxyMetrics


class _Spool:
    problem = None
    records_written, fsyncs, write_failures, records_refused, records_dropped = 3, 1, 0, 0, 2


class _Decider:
    cache_hits, cache_misses = 1_234_567, 2


class _Refusal:
    reason = "unauthorized"


class _Refusals:
    current = _Refusal()
    counts = {"proxy-id-bound": 3, "unauthorized": 1}


class _Shipper:
    shipped_decisions = 4
    foreign_segments = {"a", "b"}
    refusals = _Refusals()


class _Expiry:
    expires_at = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


def _ours() -> ProxyMetrics:
    metrics = ProxyMetrics()
    metrics.observe_record(
        {"action": "allow", "reason_codes": [], "inspect_ms": 0.2, "upstream_ms": 5.0}
    )
    metrics.observe_record({"action": "block", "reason_codes": ['A"quoted"\\', "B\nline"]})
    metrics.observe_record({"action": "block", "would_block": True, "fault": "engine_timeout"})
    for _ in range(3):
        metrics.policy_seconds.observe(0.0001)  # on a bucket's bound: counted in it (le)
    metrics.snapshot_reloads.labels(result="ok").inc()
    metrics.snapshot_reloads.labels(result="failed").inc(2)
    metrics.inflight.inc()
    metrics.open_connections.set(7)
    metrics.watch_decider(_Decider())
    metrics.watch_spool(_Spool())
    metrics.watch_shipper(_Shipper())
    metrics.watch_token_expiry(_Expiry())
    return metrics


_FAST = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
_SLOW = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class _Reference:
    """The series the proxy promises (names, HELP, labels, buckets), with its current values."""

    def __init__(self, metrics: ProxyMetrics) -> None:
        self.m = metrics

    def collect(self):  # prometheus_client's collector protocol
        m = self.m
        decisions = CounterMetricFamily(
            "sharewall_decisions",
            "Decisions by effective action and reason code (reason 'none' when allowed).",
            labels=["action", "reason"],
        )
        for (action, reason), count in m._decision_counts.items():
            decisions.add_metric([action, reason], count)
        yield decisions
        for h, name, doc, bounds in (
            (m.inspect_seconds, "sharewall_inspection_seconds", "Payload inspection time.", _FAST),
            (m.policy_seconds, "sharewall_policy_seconds", "Policy decision time.", _FAST),
            (
                m.upstream_seconds,
                "sharewall_upstream_seconds",
                "Time to the upstream's response head.",
                _SLOW,
            ),
        ):
            total, buckets = 0, []
            for bound, count in zip((*bounds, math.inf), h.counts, strict=True):
                total += count
                buckets.append((floatToGoString(bound), total))
            yield HistogramMetricFamily(name, doc, buckets=buckets, sum_value=h.sum)
        for level, name, doc in (
            (m.inflight, "sharewall_inflight_requests", "Calls being decided or streamed."),
            (m.open_tunnels, "sharewall_open_tunnels", "Spliced CONNECT tunnels open."),
            (m.open_connections, "sharewall_open_connections", "Client connections open."),
        ):
            yield GaugeMetricFamily(name, doc, value=level.value)
        for counter, name, doc, label in (
            (
                m.snapshot_reloads,
                "sharewall_snapshot_reloads",
                "Registry snapshot loads by result (ok, failed).",
                "result",
            ),
            (
                m.clients_refused,
                "sharewall_clients_refused",
                "Gateway clients refused (--client-ca) by reason (handshake, no_workload).",
                "reason",
            ),
        ):
            family = CounterMetricFamily(name, doc, labels=[label])
            for value, count in counter.counts.items():
                family.add_metric([value], count)
            yield family
        for name, value in (("hits", 1_234_567), ("misses", 2)):
            yield CounterMetricFamily(
                f"sharewall_decision_cache_{name}", f"Decision cache {name}.", value=value
            )
        yield GaugeMetricFamily(
            "sharewall_spool_writable",
            "1 when the spool takes records; 0 while refused calls are answered 503.",
            value=1,
        )
        for name, doc in (
            (
                "records_written",
                "Records written to the spool (a refusal's fsync'd before its answer).",
            ),
            ("fsyncs", "Spool fsyncs (records of a few ms share one)."),
            ("write_failures", "Failed spool writes (disk full, I/O error)."),
            ("records_refused", "Refusals answered 503: no record on disk."),
            ("records_dropped", "Unawaited records dropped (backlog full)."),
        ):
            yield CounterMetricFamily(f"sharewall_spool_{name}", doc, value=getattr(_Spool, name))
        yield CounterMetricFamily(
            "sharewall_shipped_decisions", "Decision records the registry acknowledged.", value=4
        )
        yield GaugeMetricFamily(
            "sharewall_spool_foreign_segments",
            "Spool segments written for another registry (kept, never shipped here).",
            value=2,
        )
        refusals = CounterMetricFamily(
            "sharewall_shipper_refusals",
            "Registry refusals (401, 403) of this proxy's shipments, by reason code.",
            labels=["reason"],
        )
        refusals.add_metric(["proxy-id-bound"], 3)
        refusals.add_metric(["unauthorized"], 1)
        yield refusals
        refused = GaugeMetricFamily(
            "sharewall_shipping_refused",
            "1 while the registry refuses this proxy's shipments, on its reason code (0 on "
            "the reasons of refusals past).",
            labels=["reason"],
        )
        refused.add_metric(["proxy-id-bound"], 0)
        refused.add_metric(["unauthorized"], 1)
        yield refused
        yield GaugeMetricFamily(
            "sharewall_registry_token_expiry_timestamp_seconds",
            "When the registry says this proxy's token stops authenticating (it was "
            "rotated), Unix seconds; absent when it does not expire.",
            value=1_796_029_200,
        )


def test_the_exposition_carries_every_series_by_name_help_labels_and_buckets() -> None:
    metrics = _ours()
    registry = CollectorRegistry()
    registry.register(_Reference(metrics))
    content_type, body = metrics.exposition()
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    assert body.decode() == generate_latest(registry).decode()


def test_prometheus_reads_the_exposition_back() -> None:
    text = _ours().exposition()[1].decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("sharewall_decisions_total", (("action", "block"), ("reason", 'A"quoted"\\')))]
    assert samples[("sharewall_decisions_total", (("action", "block"), ("reason", "B\nline")))]
    key = (
        "sharewall_decisions_total",
        (("action", "would_block"), ("reason", "fault:engine_timeout")),
    )
    assert samples[key] == 1
    assert samples[("sharewall_policy_seconds_bucket", (("le", "0.0001"),))] == 3
    assert samples[("sharewall_snapshot_reloads_total", (("result", "failed"),))] == 2
    assert samples[("sharewall_decision_cache_hits_total", ())] == 1_234_567
    assert samples[("sharewall_open_connections", ())] == 7
    assert "sharewall_decision_cache_hits_total 1.234567e+06\n" in text
