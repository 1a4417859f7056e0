"""Workers' OpenMetrics summed into one exposition (the `--workers` admin port)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from proxy import metrics_merge
from proxy.metrics import ProxyMetrics
from proxy.prometheus import OPENMETRICS_ACCEPT


class _Spool:
    def __init__(self, problem: str | None) -> None:
        self.problem = problem
        self.records_written = 3
        self.fsyncs = self.write_failures = self.records_refused = self.records_dropped = 1


def _worker(denials: int, inspect_ms: float, spool_problem: str | None) -> str:
    metrics = ProxyMetrics()
    metrics.watch_spool(_Spool(spool_problem))
    for _ in range(denials):
        metrics.observe_record(
            {"action": "deny", "reason_codes": ["UNKNOWN_RECIPIENT"], "inspect_ms": inspect_ms}
        )
    metrics.inflight.set(2)
    return _openmetrics(metrics)


def _openmetrics(metrics: ProxyMetrics) -> str:
    """A worker's answer to the supervisor's scrape."""
    content_type, body = metrics.exposition(OPENMETRICS_ACCEPT)
    assert content_type.startswith("application/openmetrics-text; version=1.0.0;")
    return body.decode()


def _text(families: metrics_merge.Families) -> str:
    """The merged families as curl gets them (no Accept: the text format 0.0.4)."""
    content_type, body = metrics_merge.render(families, None)
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    return body.decode()


def test_counters_histograms_and_gauges_add_up_and_writability_is_the_worst():
    one, two = _worker(3, 0.2, None), _worker(4, 30.0, "spool unwritable (ENOSPC)")
    merged = _text(metrics_merge.merge([metrics_merge.parse(one), metrics_merge.parse(two)]))
    # Prometheus' own parser reads it back.
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(merged)
        for s in family.samples
    }
    denied = (("action", "deny"), ("reason", "UNKNOWN_RECIPIENT"))
    assert samples["sharewall_decisions_total", denied] == 7
    assert samples["sharewall_inspection_seconds_count", ()] == 7
    assert samples["sharewall_inspection_seconds_bucket", (("le", "0.001"),)] == 3
    assert samples["sharewall_inspection_seconds_bucket", (("le", "+Inf"),)] == 7
    assert samples["sharewall_inflight_requests", ()] == 4
    assert samples["sharewall_spool_records_written_total", ()] == 6
    assert samples["sharewall_spool_writable", ()] == 0  # one worker cannot write


def test_only_what_never_decreases_is_carried_past_a_process():
    carried = metrics_merge.cumulative(metrics_merge.parse(_worker(1, 0.2, None)))
    names = {
        s.name for family in text_string_to_metric_families(_text(carried)) for s in family.samples
    }
    assert "sharewall_decisions_total" in names
    assert "sharewall_inspection_seconds_bucket" in names
    assert "sharewall_spool_records_written_total" in names
    assert "sharewall_inflight_requests" not in names
    assert "sharewall_spool_writable" not in names


def test_label_values_with_quotes_backslashes_and_newlines_survive_the_merge():
    metrics = ProxyMetrics()
    metrics.observe_record({"action": "block", "reason_codes": ['A"q"\\', "B\nline"]})
    text = _openmetrics(metrics)
    merged = _text(metrics_merge.merge([metrics_merge.parse(text), metrics_merge.parse(text)]))
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(merged)
        for s in family.samples
    }
    assert samples["sharewall_decisions_total", (("action", "block"), ("reason", 'A"q"\\'))] == 2
    assert samples["sharewall_decisions_total", (("action", "block"), ("reason", "B\nline"))] == 2
