"""The registry snapshot: the schema shared by the YAML file, the registry API, the proxy and Rego."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, date, datetime
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sharewall.hosts import normalise_host_pattern
from sharewall.taxonomy import load_taxonomy

SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
REGION_RE = re.compile(r"^[A-Z]{2}$")

Status = Literal["proposed", "approved", "suspended", "revoked"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class Grant(_Strict):
    """What a recipient may receive for one purpose."""

    purpose: str
    categories: tuple[str, ...] = ()
    legal_basis: str | None = None
    expires: date | None = None

    @field_validator("purpose")
    @classmethod
    def _known_purpose(cls, value: str) -> str:
        if not load_taxonomy().is_purpose(value):
            raise ValueError(f"unknown purpose {value!r}")
        return value

    @field_validator("categories")
    @classmethod
    def _known_categories(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        taxonomy = load_taxonomy()
        unknown = [c for c in value if not taxonomy.is_category(c)]
        if unknown:
            raise ValueError(f"unknown categor{'y' if len(unknown) == 1 else 'ies'} {unknown}")
        return tuple(dict.fromkeys(value))

    @field_validator("legal_basis")
    @classmethod
    def _known_legal_basis(cls, value: str | None) -> str | None:
        if value is not None and value not in load_taxonomy().legal_bases:
            raise ValueError(f"unknown legal basis {value!r}")
        return value

    def is_active_on(self, day: date) -> bool:
        """An expired grant grants nothing; `expires` is the last valid day (UTC)."""
        return self.expires is None or self.expires >= day


class Recipient(_Strict):
    """A third party that may receive data, with the hosts it answers on and its grants."""

    id: str
    name: str
    kind: str
    status: Status = "proposed"
    regions: tuple[str, ...] = ()
    hosts: tuple[str, ...] = ()
    tls_origination: bool = False
    inspect_tls: bool = False
    grants: tuple[Grant, ...] = ()
    owner_team: str | None = None
    contract_ref: str | None = None
    notes: str | None = None

    @field_validator("id")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not SLUG_RE.match(value):
            raise ValueError("must be a slug: lowercase letters, digits, '-' or '_', 1-63 chars")
        return value

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, value: str) -> str:
        if not load_taxonomy().is_recipient_kind(value):
            raise ValueError(f"unknown recipient kind {value!r}")
        return value

    @field_validator("regions")
    @classmethod
    def _iso_regions(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [r for r in value if not REGION_RE.match(r)]
        if bad:
            raise ValueError(f"not ISO 3166 alpha-2 codes: {bad}")
        return tuple(dict.fromkeys(value))

    @field_validator("hosts")
    @classmethod
    def _host_patterns(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        # The proxy's own parser: what the registry accepts is exactly what the proxy matches.
        return tuple(dict.fromkeys(normalise_host_pattern(host) for host in value))

    def active_grants(self, day: date) -> tuple[Grant, ...]:
        return tuple(g for g in self.grants if g.is_active_on(day))


class Snapshot(_Strict):
    """Every recipient the enforcement points know, at one registry version."""

    version: int = 0
    revision: str = ""
    generated_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    recipients: tuple[Recipient, ...] = ()

    @model_validator(mode="after")
    def _unique_ids(self) -> Snapshot:
        seen: set[str] = set()
        for r in self.recipients:
            if r.id in seen:
                raise ValueError(f"duplicate recipient id {r.id!r}")
            seen.add(r.id)
        return self

    def recipient(self, recipient_id: str) -> Recipient | None:
        return next((r for r in self.recipients if r.id == recipient_id), None)

    def policy_data(self) -> dict[str, Any]:
        """The snapshot as Rego sees it at `data.sharewall.registry`."""
        return {
            "version": self.version,
            "revision": self.revision,
            "recipients": {
                r.id: r.model_dump(mode="json", exclude={"owner_team", "contract_ref", "notes"})
                for r in self.recipients
            },
        }

    def with_revision(self) -> Snapshot:
        """Return a copy whose `revision` is the SHA-256 of its content (stable across loads)."""
        body = orjson.dumps(
            [r.model_dump(mode="json") for r in self.recipients], option=orjson.OPT_SORT_KEYS
        )
        return self.model_copy(update={"revision": hashlib.sha256(body).hexdigest()[:16]})
