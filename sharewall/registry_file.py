"""Registry as code: load and validate the YAML registry file (docs/registry-file.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from sharewall.snapshot import Recipient, Snapshot, Workload

# libyaml's safe loader parses a 10,000-recipient file about 10x faster than the pure one.
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class RegistryFileError(ValueError):
    """A registry file that cannot be used; the message names the file, entry and field."""


def _field_path(loc: tuple[Any, ...], whole: str) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or whole


def _validation_error(
    source: str, where: str, exc: ValidationError, whole: str
) -> RegistryFileError:
    err = exc.errors()[0]
    message = err["msg"].removeprefix("Value error, ")
    return RegistryFileError(f"{source}: {where}: {_field_path(err['loc'], whole)}: {message}")


def parse_registry_document(doc: Any, source: str = "<registry>") -> Snapshot:
    """Validate a decoded registry document (`{"recipients": [...], "workloads": [...]}`).

    `workloads` is optional; a workload's `recipients` must name recipients of the document.
    """
    if not isinstance(doc, dict) or not isinstance(doc.get("recipients"), list):
        raise RegistryFileError(f"{source}: expected a mapping with a 'recipients' list")
    unknown_top = set(doc) - {"recipients", "workloads"}
    if unknown_top:
        raise RegistryFileError(f"{source}: unknown top-level keys {sorted(unknown_top)}")
    recipients = _parse_recipients(doc["recipients"], source)
    workloads = _parse_workloads(doc.get("workloads"), {r.id for r in recipients}, source)
    return Snapshot(
        version=1, recipients=tuple(recipients), workloads=tuple(workloads)
    ).with_revision()


def _parse_recipients(items: list[Any], source: str) -> list[Recipient]:
    recipients: list[Recipient] = []
    seen: set[str] = set()
    for index, item in enumerate(items):
        label = item.get("id") if isinstance(item, dict) else None
        where = f"recipient {label!r}" if label else f"recipients[{index}]"
        try:
            recipient = Recipient.model_validate(item)
        except ValidationError as exc:
            raise _validation_error(source, where, exc, "(recipient)") from None
        if recipient.id in seen:
            raise RegistryFileError(f"{source}: {where}: id: duplicate recipient id")
        seen.add(recipient.id)
        recipients.append(recipient)
    return recipients


def _parse_workloads(items: Any, recipient_ids: set[str], source: str) -> list[Workload]:
    if items is None:  # absent (or `workloads:` with nothing under it): source binding off
        return []
    if not isinstance(items, list):
        raise RegistryFileError(f"{source}: 'workloads' must be a list")
    workloads: list[Workload] = []
    seen: set[tuple[str, str]] = set()
    for index, item in enumerate(items):
        where = f"workloads[{index}]"
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            namespace = item.get("namespace")
            where = (
                f"workload {item['name']!r}"
                if not isinstance(namespace, str)
                else (f"workload '{namespace}/{item['name']}'")
            )
        try:
            workload = Workload.model_validate(item)
        except ValidationError as exc:
            raise _validation_error(source, where, exc, "(workload)") from None
        if workload.key in seen:
            raise RegistryFileError(f"{source}: {where}: name: duplicate workload in its namespace")
        unknown = [r for r in workload.recipients or () if r not in recipient_ids]
        if unknown:
            raise RegistryFileError(
                f"{source}: {where}: recipients: unknown recipient ids {unknown}"
            )
        seen.add(workload.key)
        workloads.append(workload)
    return workloads


def decode_registry_text(text: str, source: str = "<registry>") -> Any:
    """Decode the YAML (or JSON, a subset of YAML) text of a registry document, unvalidated."""
    try:
        return yaml.load(text, Loader=_SafeLoader)  # noqa: S506 - a safe loader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise RegistryFileError(f"{source}: invalid YAML{where}") from None


def read_registry_text(path: str | Path) -> str:
    """The text of a registry file; `RegistryFileError` with a one-line reason when unreadable."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RegistryFileError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RegistryFileError(f"{path}: cannot read: {exc}") from None


def load_registry_file(path: str | Path) -> Snapshot:
    """Read and validate a YAML registry file; raise `RegistryFileError` with a one-line reason."""
    doc = decode_registry_text(read_registry_text(path), source=str(path))
    return parse_registry_document(doc, source=str(path))


def dump_registry_document(snapshot: Snapshot) -> dict[str, Any]:
    """The inverse of `parse_registry_document`: a document `registry apply` accepts."""
    doc: dict[str, Any] = {
        "recipients": [
            r.model_dump(mode="json", exclude_none=True, exclude_defaults=False)
            for r in snapshot.recipients
        ]
    }
    if snapshot.workloads:
        doc["workloads"] = [
            w.model_dump(mode="json", exclude_none=True) for w in snapshot.workloads
        ]
    return doc
