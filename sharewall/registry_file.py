"""Registry as code: load and validate the YAML registry file (docs/registry-file.md)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from sharewall.document_decode import DocumentError, decode
from sharewall.document_split import split_document
from sharewall.slices import collector_paused, consumed, each_in_slices, release_gradually
from sharewall.snapshot import Recipient, SchemaError, Snapshot, Workload
from sharewall.snapshot_delta import canonical_json, revision_of_parts


class RegistryFileError(ValueError):
    """A registry file that cannot be used; the message names the file, entry and field."""


def _field_path(loc: tuple[str | int, ...], whole: str) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or whole


def _validation_error(source: str, where: str, exc: SchemaError, whole: str) -> RegistryFileError:
    return RegistryFileError(f"{source}: {where}: {_field_path(exc.loc, whole)}: {exc.message}")


class _DocumentCheck:
    """The checks of a registry document, one entry at a time (so they can run in slices)."""

    def __init__(self, doc: Any, source: str) -> None:
        if not isinstance(doc, dict) or not isinstance(doc.get("recipients"), list):
            raise RegistryFileError(f"{source}: expected a mapping with a 'recipients' list")
        unknown_top = set(doc) - {"recipients", "workloads"}
        if unknown_top:
            raise RegistryFileError(f"{source}: unknown top-level keys {sorted(unknown_top)}")
        self.source = source
        self.recipient_items: list[Any] = doc["recipients"]
        self._workload_items = doc.get("workloads")
        self.recipients: list[Recipient] = []
        self.workloads: list[Workload] = []
        self._ids: set[str] = set()
        self._keys: set[tuple[str, str]] = set()

    def recipient(self, numbered: tuple[int, Any]) -> Recipient:
        index, item = numbered
        label = item.get("id") if isinstance(item, dict) else None
        where = f"recipient {label!r}" if label else f"recipients[{index}]"
        try:
            recipient = Recipient.from_data(item)
        except SchemaError as exc:
            raise _validation_error(self.source, where, exc, "(recipient)") from None
        if recipient.id in self._ids:
            raise RegistryFileError(f"{self.source}: {where}: id: duplicate recipient id")
        self._ids.add(recipient.id)
        self.recipients.append(recipient)
        return recipient

    def workload_items(self) -> list[Any]:
        """The workload entries (checked after the recipients, whose ids they name)."""
        items = self._workload_items
        if items is None:  # absent (or `workloads:` with nothing under it): source binding off
            return []
        if not isinstance(items, list):
            raise RegistryFileError(f"{self.source}: 'workloads' must be a list")
        return items

    def workload(self, numbered: tuple[int, Any]) -> Workload:
        index, item = numbered
        where = f"workloads[{index}]"
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            namespace = item.get("namespace")
            where = (
                f"workload {item['name']!r}"
                if not isinstance(namespace, str)
                else (f"workload '{namespace}/{item['name']}'")
            )
        try:
            workload = Workload.from_data(item)
        except SchemaError as exc:
            raise _validation_error(self.source, where, exc, "(workload)") from None
        if workload.key in self._keys:
            raise RegistryFileError(
                f"{self.source}: {where}: name: duplicate workload in its namespace"
            )
        unknown = [r for r in workload.recipients or () if r not in self._ids]
        if unknown:
            raise RegistryFileError(
                f"{self.source}: {where}: recipients: unknown recipient ids {unknown}"
            )
        self._keys.add(workload.key)
        self.workloads.append(workload)
        return workload

    def unrevised(self) -> Snapshot:
        return Snapshot(
            version=1, recipients=tuple(self.recipients), workloads=tuple(self.workloads)
        )


def parse_registry_document(doc: Any, source: str = "<registry>") -> Snapshot:
    """Validate a decoded registry document (`{"recipients": [...], "workloads": [...]}`).

    `workloads` is optional; a workload's `recipients` must name recipients of the document.
    """
    check = _DocumentCheck(doc, source)
    for numbered in enumerate(check.recipient_items):
        check.recipient(numbered)
    for numbered in enumerate(check.workload_items()):
        check.workload(numbered)
    return check.unrevised().with_revision()


async def parse_registry_document_sliced(doc: Any, source: str = "<registry>") -> Snapshot:
    """`parse_registry_document` on the event loop in slices (`sharewall.slices`): same result."""
    check = _DocumentCheck(doc, source)
    parts: list[bytes] = []

    def recipient(numbered: tuple[int, Any]) -> None:
        parts.append(canonical_json(check.recipient(numbered).to_data()))

    with collector_paused():
        # Our own decoded copy: each entry is let go of once validated.
        await each_in_slices(enumerate(consumed(check.recipient_items)), recipient)
        await each_in_slices(enumerate(check.workload_items()), check.workload)
    workload_parts = [canonical_json(w.to_data()) for w in check.workloads]
    # Joining and hashing ~4 MB a chunk at a time: hashlib lets the loop run meanwhile.
    revision = await asyncio.to_thread(revision_of_parts, parts, workload_parts)
    release_gradually(parts, after=0.0)  # 10,000 parts freed at once are a stretch too
    # Every entry is validated and the ids are unique (the checks above): constructing the
    # snapshot does not walk 10,000 recipients again in one go.
    return Snapshot(
        version=1,
        revision=revision,
        recipients=tuple(check.recipients),
        workloads=tuple(check.workloads),
    )


def decode_registry_text(text: str, source: str = "<registry>") -> Any:
    """Decode the YAML (or JSON, a subset of YAML) text of a registry document, unvalidated."""
    # PyYAML is imported by `decode`: the proxy decodes its registry file in a child process
    # (`sharewall.document_split`) and carries no PyYAML (~1.2 MB).
    try:
        return decode("yaml", text)
    except DocumentError as exc:
        raise RegistryFileError(f"{source}: {exc}") from None


def read_registry_text(path: str | Path) -> str:
    """The text of a registry file; `RegistryFileError` with a one-line reason when unreadable."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RegistryFileError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RegistryFileError(f"{path}: cannot read: {exc}") from None


async def load_registry_file_sliced(path: str | Path) -> Snapshot:
    """`load_registry_file` without holding the event loop: decoded in a child process
    (`sharewall.document_split`), validated in slices. Same snapshot, same errors."""
    text = await asyncio.to_thread(read_registry_text, path)
    with collector_paused():
        try:
            doc = await split_document("yaml", text.encode("utf-8"))
        except DocumentError as exc:
            raise RegistryFileError(f"{path}: {exc}") from None
        except OSError:  # no child process here: decode in a thread (holds the loop meanwhile)
            doc = await asyncio.to_thread(decode_registry_text, text, str(path))
        return await parse_registry_document_sliced(doc, source=str(path))


def load_registry_file(path: str | Path) -> Snapshot:
    """Read and validate a YAML registry file; raise `RegistryFileError` with a one-line reason."""
    doc = decode_registry_text(read_registry_text(path), source=str(path))
    return parse_registry_document(doc, source=str(path))


def dump_registry_document(snapshot: Snapshot) -> dict[str, Any]:
    """The inverse of `parse_registry_document`: a document `registry apply` accepts."""
    doc: dict[str, Any] = {
        "recipients": [entry_as_written(r.to_data()) for r in snapshot.recipients]
    }
    if snapshot.workloads:
        doc["workloads"] = [entry_as_written(w.to_data()) for w in snapshot.workloads]
    return doc


def entry_as_written(entry: dict[str, Any]) -> dict[str, Any]:
    """An entry's fields that are set (a grant's too): what a person would write in the file."""
    out = {k: v for k, v in entry.items() if v is not None}
    if "grants" in out:
        out["grants"] = [{k: v for k, v in g.items() if v is not None} for g in out["grants"]]
    return out
