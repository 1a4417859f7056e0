"""The taxonomy of data categories, purposes and recipient kinds (one JSON file, read by Rego too)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import orjson

_HERE = Path(__file__).resolve().parent
TAXONOMY_RELPATH = Path("sharewall") / "taxonomy" / "data.json"


def policy_dir() -> Path:
    """Return the `policies.rego/` folder: `$SHAREWALL_POLICY_DIR`, the installed copy, or the repo's."""
    override = os.environ.get("SHAREWALL_POLICY_DIR")
    if override:
        return Path(override)
    for candidate in (_HERE / "policies.rego", _HERE.parent / "policies.rego"):
        if (candidate / TAXONOMY_RELPATH).is_file():
            return candidate
    raise FileNotFoundError("policies.rego/ not found beside the sharewall package")


@dataclass(frozen=True)
class Taxonomy:
    """Category, purpose and recipient-kind ids with their groups and the data-residency lists."""

    categories: Mapping[str, Mapping[str, str]]
    category_groups: Mapping[str, frozenset[str]]
    purposes: Mapping[str, Mapping[str, str]]
    purpose_groups: Mapping[str, frozenset[str]]
    recipient_kinds: Mapping[str, Mapping[str, str]]
    recipient_statuses: tuple[str, ...]
    legal_bases: tuple[str, ...]
    home_regions: frozenset[str]
    purposes_allowed_abroad: frozenset[str]
    high_risk_kinds: frozenset[str]
    reason_codes: Mapping[str, str]
    raw: Mapping[str, object]
    # The privacy-policy sentence behind each reason code (shown to reviewers).
    reason_policy: Mapping[str, str] = field(default_factory=dict)
    # Fides (fideslang) names of the legal bases, for the data-map export.
    fides_legal_bases: Mapping[str, str] = field(default_factory=dict)

    def is_category(self, category: str) -> bool:
        return category in self.categories

    def is_purpose(self, purpose: str) -> bool:
        return purpose in self.purposes

    def is_recipient_kind(self, kind: str) -> bool:
        return kind in self.recipient_kinds

    def is_reason_code(self, code: str) -> bool:
        return code in self.reason_codes

    def fides_key(self, category: str) -> str:
        """Return the closest Fides/fideslang key of a category id."""
        return self.categories[category]["fides"]

    def fides_data_use(self, purpose: str) -> str:
        """Return the Fides data use a purpose id maps to."""
        return self.purposes[purpose]["fides"]


def parse_taxonomy(doc: Mapping[str, object]) -> Taxonomy:
    """Build a `Taxonomy` from the decoded data file."""
    residency = doc["residency"]
    return Taxonomy(
        categories=doc["categories"],
        category_groups={k: frozenset(v) for k, v in doc["category_groups"].items()},
        purposes=doc["purposes"],
        purpose_groups={k: frozenset(v) for k, v in doc["purpose_groups"].items()},
        recipient_kinds=doc["recipient_kinds"],
        recipient_statuses=tuple(doc["recipient_statuses"]),
        legal_bases=tuple(doc["legal_bases"]),
        home_regions=frozenset(residency["home_regions"]),
        purposes_allowed_abroad=frozenset(residency["purposes_allowed_abroad"]),
        high_risk_kinds=frozenset(doc["high_risk_kinds"]),
        reason_codes=doc["reason_codes"],
        raw=doc,
        reason_policy=doc.get("reason_policy", {}),
        fides_legal_bases=doc.get("fides_legal_bases", {}),
    )


@cache
def load_taxonomy(path: Path | None = None) -> Taxonomy:
    """Load (once) the taxonomy data file shipped in `policies.rego/`."""
    path = path or policy_dir() / TAXONOMY_RELPATH
    return parse_taxonomy(orjson.loads(path.read_bytes()))
