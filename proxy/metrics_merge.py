"""Several processes' Prometheus text turned into one exposition (`--workers N`'s admin port).

Samples with the same name and labels are summed (counters, histograms and gauges such as
calls in flight add up over processes), except the gauges in `LEAST_OF`, which say whether
something works and take the worst worker's value. Only the text format that
`prometheus_client.generate_latest` writes is read: `# HELP`/`# TYPE` lines, then samples
`name{labels} value` without timestamps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

# 1/0 gauges: the merged value is the least (0 as soon as one worker's spool is unwritable).
LEAST_OF = frozenset({"sharewall_spool_writable"})
# Families whose samples only grow over a process's life.
CUMULATIVE = frozenset({"counter", "histogram", "summary"})


@dataclass
class Family:
    """One metric family: its HELP text, its type and its samples (`name{labels}` -> value)."""

    name: str
    help: str
    type: str
    samples: dict[str, float] = field(default_factory=dict)


Families = dict[str, Family]


def parse(text: str) -> Families:
    """The families of one exposition, in their order; a line that is not a sample is skipped."""
    families: Families = {}
    current: Family | None = None
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, doc = line[7:].partition(" ")
            current = families.setdefault(name, Family(name, doc, "untyped"))
            current.help = doc
        elif line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            current = families.setdefault(name, Family(name, "", kind))
            current.type = kind
        elif line and not line.startswith("#") and current is not None:
            key, _, value = line.rpartition(" ")
            try:
                current.samples[key] = float(value)
            except ValueError:
                continue
    return families


def cumulative(families: Families) -> Families:
    """Only the families that never decrease (kept when their process exits)."""
    return {
        name: Family(f.name, f.help, f.type, dict(f.samples))
        for name, f in families.items()
        if f.type in CUMULATIVE
    }


def merge(parts: list[Families]) -> Families:
    """The families of every part, samples of the same name and labels combined."""
    merged: Families = {}
    for part in parts:
        for name, family in part.items():
            into = merged.get(name)
            if into is None:
                into = merged[name] = Family(name, family.help, family.type)
            least = name in LEAST_OF
            for key, value in family.samples.items():
                seen = into.samples.get(key)
                if seen is None:
                    into.samples[key] = value
                else:
                    into.samples[key] = min(seen, value) if least else seen + value
    return merged


def render(families: Families) -> bytes:
    """The text exposition of `families`."""
    out: list[str] = []
    for family in families.values():
        out.append(f"# HELP {family.name} {family.help}")
        out.append(f"# TYPE {family.name} {family.type}")
        out.extend(f"{key} {_number(value)}" for key, value in family.samples.items())
    out.append("")
    return "\n".join(out).encode()


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)
