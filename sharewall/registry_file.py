"""Registry as code: load and validate the YAML registry file of DESIGN.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from sharewall.snapshot import Recipient, Snapshot

# libyaml's safe loader parses a 10,000-recipient file about 10x faster than the pure one.
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class RegistryFileError(ValueError):
    """A registry file that cannot be used; the message names the file, recipient and field."""


def _field_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(recipient)"


def parse_registry_document(doc: Any, source: str = "<registry>") -> Snapshot:
    """Validate a decoded registry document (`{"recipients": [...]}`) into a `Snapshot`."""
    if not isinstance(doc, dict) or not isinstance(doc.get("recipients"), list):
        raise RegistryFileError(f"{source}: expected a mapping with a 'recipients' list")
    unknown_top = set(doc) - {"recipients"}
    if unknown_top:
        raise RegistryFileError(f"{source}: unknown top-level keys {sorted(unknown_top)}")
    recipients: list[Recipient] = []
    seen: set[str] = set()
    for index, item in enumerate(doc["recipients"]):
        label = item.get("id") if isinstance(item, dict) else None
        where = f"recipient {label!r}" if label else f"recipients[{index}]"
        try:
            recipient = Recipient.model_validate(item)
        except ValidationError as exc:
            err = exc.errors()[0]
            raise RegistryFileError(
                f"{source}: {where}: {_field_path(err['loc'])}: {err['msg'].removeprefix('Value error, ')}"
            ) from None
        if recipient.id in seen:
            raise RegistryFileError(f"{source}: {where}: id: duplicate recipient id")
        seen.add(recipient.id)
        recipients.append(recipient)
    return Snapshot(version=1, recipients=tuple(recipients)).with_revision()


def load_registry_file(path: str | Path) -> Snapshot:
    """Read and validate a YAML registry file; raise `RegistryFileError` with a one-line reason."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RegistryFileError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RegistryFileError(f"{path}: cannot read: {exc}") from None
    try:
        doc = yaml.load(text, Loader=_SafeLoader)  # noqa: S506 - a safe loader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise RegistryFileError(f"{path}: invalid YAML{where}") from None
    return parse_registry_document(doc, source=str(path))


def dump_registry_document(snapshot: Snapshot) -> dict[str, Any]:
    """The inverse of `parse_registry_document`: a document `registry apply` accepts."""
    return {
        "recipients": [
            r.model_dump(mode="json", exclude_none=True, exclude_defaults=False)
            for r in snapshot.recipients
        ]
    }
