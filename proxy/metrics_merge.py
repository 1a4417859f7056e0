"""Several processes' metrics turned into one exposition (`--workers N`'s admin port).

Each worker is asked for OpenMetrics (`proxy.prometheus.OPENMETRICS_ACCEPT`), read by prometheus_client's
OpenMetrics parser; samples with the same name and labels are summed (counters, histograms and
gauges such as calls in flight add up over processes), except the gauges in `LEAST_OF`, which
say whether something works and take the worst worker's value. The sums are written back in
the format the supervisor's scrape asks for (`proxy.prometheus.expose`).
"""

from __future__ import annotations

from collections.abc import Iterator

from proxy.prometheus import (
    Collector,
    CollectorRegistry,
    Metric,
    expose,
    parse_openmetrics,
)

# Gauges whose merged value is the least: 1/0 ones (0 as soon as one worker's spool is
# unwritable) and the token expiry (the earliest any worker was told of).
LEAST_OF = frozenset(
    {"sharewall_spool_writable", "sharewall_registry_token_expiry_timestamp_seconds"}
)
# Families whose samples only grow over a process's life.
CUMULATIVE = frozenset({"counter", "histogram", "summary"})

# Families by name (a counter's without `_total`, as prometheus_client names them), in order.
Families = dict[str, Metric]


def parse(text: str) -> Families:
    """The families of one OpenMetrics exposition, in their order."""
    return {family.name: family for family in parse_openmetrics(text)}


def cumulative(families: Families) -> Families:
    """Only the families that never decrease (kept when their process exits)."""
    return {name: f for name, f in families.items() if f.type in CUMULATIVE}


def merge(parts: list[Families]) -> Families:
    """The families of every part, samples of the same name and labels combined."""
    sums: dict[str, tuple[Metric, dict[tuple[str, tuple[tuple[str, str], ...]], float]]] = {}
    for part in parts:
        for name, family in part.items():
            if name not in sums:
                sums[name] = (family, {})
            values = sums[name][1]
            least = name in LEAST_OF
            for sample in family.samples:
                key = (sample.name, tuple(sample.labels.items()))
                seen = values.get(key)
                if seen is None:
                    values[key] = sample.value
                else:
                    values[key] = min(seen, sample.value) if least else seen + sample.value
    merged: Families = {}
    for name, (first, values) in sums.items():
        family = merged[name] = Metric(first.name, first.documentation, first.type)
        for (sample_name, labels), value in values.items():
            family.add_sample(sample_name, dict(labels), value)
    return merged


def render(families: Families, accept: str | None) -> tuple[str, bytes]:
    """(Content-Type, body): `families` in the format `accept` asks for."""
    registry = CollectorRegistry()
    registry.register(_Families(families))
    return expose(registry, accept)


class _Families(Collector):
    """prometheus_client's collector over families already built."""

    def __init__(self, families: Families) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        yield from self._families.values()
