"""`sharewall inject`: multi-document YAML in, the same documents out with every pod injected."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import yaml

from injector.config import InjectionError, InjectorConfig
from injector.pod import inject_pod

# Where each kind keeps the pod it runs (apiVersion aside: the path is the same in every
# version of these kinds). Other kinds pass through unchanged.
POD_TEMPLATE_PATHS: dict[str, tuple[str, ...]] = {
    "Pod": (),
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "ReplicationController": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}


@dataclass
class Report:
    """What `sharewall inject` did: objects per outcome, and warnings for the pod's author."""

    counts: Counter[str] = field(default_factory=Counter)
    warnings: list[str] = field(default_factory=list)


def _describe(doc: dict[str, Any]) -> str:
    return f"{doc.get('kind')} {(doc.get('metadata') or {}).get('name') or '(unnamed)'}"


def inject_document(doc: Any, config: InjectorConfig, report: Report | None = None) -> Any:
    """One manifest with its pod injected (a `List` item by item); other objects unchanged."""
    report = Report() if report is None else report
    if not isinstance(doc, dict):
        return doc
    if doc.get("kind") == "List" and isinstance(doc.get("items"), list):
        return {**doc, "items": [inject_document(item, config, report) for item in doc["items"]]}
    path = POD_TEMPLATE_PATHS.get(str(doc.get("kind")))
    if path is None:
        report.counts["passed-through"] += 1
        return doc
    template: Any = doc
    for key in path:
        template = template.get(key) if isinstance(template, dict) else None
    if not isinstance(template, dict):
        raise InjectionError(f"{_describe(doc)}: no pod template at {'.'.join(path)}")
    # A workload's pods are named after it (plus a random suffix): its name is the source.
    workload = (doc.get("metadata") or {}).get("name") if path else None
    try:
        result = inject_pod(template, config, workload=workload)
    except InjectionError as exc:
        raise InjectionError(f"{_describe(doc)}: {exc}") from None
    report.counts[result.status] += 1
    report.warnings += [f"{_describe(doc)}: {warning}" for warning in result.warnings]
    if not path:
        return result.pod
    out = _copy_along(doc, path[:-1])
    _get(out, path[:-1])[path[-1]] = result.pod
    return out


def _copy_along(doc: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    """A shallow copy of `doc` and of every mapping on `path`, so setting a key there leaves the
    input untouched."""
    out = dict(doc)
    node = out
    for key in path:
        node[key] = dict(node[key])
        node = node[key]
    return out


def _get(doc: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    for key in path:
        doc = doc[key]
    return doc


def load_documents(text: str) -> list[Any]:
    """Every YAML document of `text` (empty documents dropped)."""
    try:
        return [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as exc:
        raise InjectionError(f"not YAML: {str(exc).splitlines()[0]}") from None


class _Dumper(yaml.SafeDumper):
    # kubectl users read these: spell every value out, no &anchors/*aliases for repeated objects.
    def ignore_aliases(self, data: Any) -> bool:
        return True


def dump_documents(docs: Iterable[Any]) -> str:
    """Documents as multi-document YAML, keys in their original order."""
    return yaml.dump_all(list(docs), Dumper=_Dumper, sort_keys=False, explicit_start=True)


def inject_text(text: str, config: InjectorConfig) -> tuple[str, Report]:
    """`sharewall inject` on a whole input: the output YAML and what was done."""
    report = Report()
    docs = [inject_document(doc, config, report) for doc in load_documents(text)]
    return dump_documents(docs), report
