"""The proxy's /metrics text is what prometheus_client would write for the same series."""

from __future__ import annotations

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


class _Shipper:
    shipped_decisions = 4
    foreign_segments = {"a", "b"}


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
    return metrics


class _Reference:
    """The same series through prometheus_client's own families and text writer."""

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
        for h in (m.inspect_seconds, m.policy_seconds, m.upstream_seconds):
            total, buckets = 0, []
            for bound, count in zip(h.bounds, h.counts, strict=True):
                total += count
                buckets.append((floatToGoString(bound), total))
            yield HistogramMetricFamily(h.name, h.doc, buckets=buckets, sum_value=h.sum)
        for level in (m.inflight, m.open_tunnels, m.open_connections):
            yield GaugeMetricFamily(level.name, level.doc, value=level.value)
        for counter, label in ((m.snapshot_reloads, "result"), (m.clients_refused, "reason")):
            family = CounterMetricFamily(counter.name, counter.doc, labels=[label])
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
            ("records_written", "Records written and fsync'd to the spool."),
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


def test_the_exposition_is_prometheus_clients_text_for_the_same_series() -> None:
    metrics = _ours()
    registry = CollectorRegistry()
    registry.register(_Reference(metrics))
    assert metrics.exposition().decode() == generate_latest(registry).decode()


def test_prometheus_reads_the_exposition_back() -> None:
    text = _ours().exposition().decode()
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
