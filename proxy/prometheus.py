"""prometheus_client for the proxy: its parts imported without the package's `__init__`.

Importing any submodule of prometheus_client runs the package's `__init__` first, and that
imports its `exposition` module: http.server, wsgiref, urllib.request, email, gzip, and the
default registry with its process and platform collectors (~3 MB of an idle sidecar,
bench/README.md). The proxy needs the metric families, a registry and the OpenMetrics writer
(and the supervisor of `--workers N` the OpenMetrics parser), none of which import those. So `prometheus_client` is registered here as its
package without running its `__init__` (`proxy.package_init`), so any other code in the
process still sees the whole library. The text format
(prometheus_client's `exposition`, where `choose_encoder` is) is imported at the first scrape
that does not ask for OpenMetrics; Prometheus asks for OpenMetrics first.

The proxy imports prometheus_client only through this module.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import sys
from collections.abc import Iterator

from proxy.package_init import register_without_init

register_without_init("prometheus_client")

# The parts the proxy uses; none imports the package's `__init__` nor its `exposition`.
from prometheus_client.metrics_core import (  # noqa: E402
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.openmetrics import exposition as openmetrics  # noqa: E402
from prometheus_client.registry import Collector, CollectorRegistry  # noqa: E402
from prometheus_client.utils import floatToGoString, parse_version  # noqa: E402

__all__ = [
    "OPENMETRICS_ACCEPT",
    "Collector",
    "CollectorRegistry",
    "CounterMetricFamily",
    "GaugeMetricFamily",
    "HistogramMetricFamily",
    "Metric",
    "expose",
    "floatToGoString",
    "load_text_format_for",
    "parse_openmetrics",
]

# What the supervisor of `--workers N` asks its workers for (and parses back).
OPENMETRICS_ACCEPT = "application/openmetrics-text; version=1.0.0"
# prometheus_client's module of the text format and `choose_encoder`.
_TEXT_FORMAT = "prometheus_client.exposition"
_ESCAPINGS = frozenset(
    {openmetrics.ALLOWUTF8, openmetrics.UNDERSCORES, openmetrics.DOTS, openmetrics.VALUES}
)


def expose(registry: Collector, accept: str | None) -> tuple[str, bytes]:
    """(Content-Type, body) of `registry` in the format the scrape's `Accept` asks for.

    prometheus_client's `choose_encoder` decides; OpenMetrics, which a Prometheus server asks
    for first, is answered here as `choose_encoder` answers it, so that the module holding
    `choose_encoder` and the text format is imported only for a client that wants text (curl,
    a browser, no Accept: the text format 0.0.4). On an event loop, `await
    load_text_format_for(accept)` first.
    """
    asked = _openmetrics_asked(accept)
    if asked is not None:
        version, escaping = asked
        if not version:
            return openmetrics.CONTENT_TYPE_LATEST, openmetrics.generate_latest(registry)
        body = openmetrics.generate_latest(registry, escaping=escaping, version=version)
        content_type = (
            f"application/openmetrics-text; version={version}; charset=utf-8; escaping={escaping}"
        )
        return content_type, body
    from prometheus_client.exposition import choose_encoder

    encoder, content_type = choose_encoder(accept or "")
    return content_type, encoder(registry)


async def load_text_format_for(accept: str | None) -> None:
    """Import the text format's module in a worker thread, the first time a scrape wants it.

    Its ~45 modules (http.server, email, urllib.request) take 30-160 ms to import: on the
    event loop, every call in flight would wait that long for one curl."""
    if _TEXT_FORMAT not in sys.modules and _openmetrics_asked(accept) is None:
        await asyncio.to_thread(importlib.import_module, _TEXT_FORMAT)


def _openmetrics_asked(accept: str | None) -> tuple[str, str] | None:
    """(version, "" when none; escaping) when `choose_encoder` would answer OpenMetrics before
    reaching a text/plain range; None otherwise (then `choose_encoder` itself decides)."""
    for accepted in (accept or "").split(","):
        media, *params = accepted.split(";")
        media = media.strip()
        if media == "text/plain":
            return None  # `choose_encoder` may pick the text format 1.0.0 here
        if media != "application/openmetrics-text":
            continue
        version = _param(params, "version")
        if not version:
            return "", openmetrics.UNDERSCORES
        if parse_version(version) >= (1, 0, 0):
            escaping = _param(params, "escaping")
            return version, escaping if escaping in _ESCAPINGS else openmetrics.UNDERSCORES
    return None


def parse_openmetrics(text: str) -> Iterator[Metric]:
    """The families of an OpenMetrics exposition, by prometheus_client's parser.

    Only the supervisor of `--workers N` reads expositions (its workers'): the parser is
    imported at its first scrape, not by every proxy process."""
    from prometheus_client.openmetrics.parser import text_string_to_metric_families

    return text_string_to_metric_families(text)


def _param(params: list[str], key: str) -> str:
    """A media type parameter's value ("" when absent), read as `choose_encoder` reads it."""
    for param in params:
        name, sep, value = param.strip().partition("=")
        if sep and name == key:
            return value
    return ""
