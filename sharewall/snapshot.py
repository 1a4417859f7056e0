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
# Kubernetes names: a namespace is a DNS-1123 label, a workload (Deployment, service account)
# a DNS-1123 subdomain, so both match what the downward API and SPIFFE ids carry.
_DNS_LABEL = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
NAMESPACE_RE = re.compile(rf"^{_DNS_LABEL}$")
WORKLOAD_NAME_RE = re.compile(rf"^(?=.{{1,253}}$){_DNS_LABEL}(\.{_DNS_LABEL})*$")

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


class Workload(_Strict):
    """A calling workload and the purposes it may declare (and, optionally, whom it may call).

    As soon as a registry declares any workload, a call from a source that is not an approved
    workload, or with a purpose or recipient outside its lists, is denied
    PURPOSE_NOT_ALLOWED_FOR_SOURCE.
    """

    namespace: str
    name: str
    status: Status = "proposed"
    purposes: tuple[str, ...]
    # None: any registered recipient; otherwise only these recipient ids.
    recipients: tuple[str, ...] | None = None

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        if not NAMESPACE_RE.match(value):
            raise ValueError(
                "must be a Kubernetes namespace: lowercase letters, digits and '-', 1-63 chars"
            )
        return value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not WORKLOAD_NAME_RE.match(value):
            raise ValueError(
                "must be a Kubernetes name: lowercase letters, digits, '-' and '.', 1-253 chars"
            )
        return value

    @field_validator("purposes")
    @classmethod
    def _known_purposes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("at least one purpose is required")
        taxonomy = load_taxonomy()
        unknown = [p for p in value if not taxonomy.is_purpose(p)]
        if unknown:
            raise ValueError(f"unknown purpose{'' if len(unknown) == 1 else 's'} {unknown}")
        return tuple(dict.fromkeys(value))

    @field_validator("recipients")
    @classmethod
    def _recipient_ids(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is None:
            return None
        if not value:
            # An empty list would silently forbid every call; absence is how to allow any.
            raise ValueError("must not be empty: leave it out to allow any registered recipient")
        bad = [r for r in value if not SLUG_RE.match(r)]
        if bad:
            raise ValueError(f"not recipient ids: {bad}")
        return tuple(dict.fromkeys(value))

    @property
    def key(self) -> tuple[str, str]:
        """(namespace, name): a workload's identity."""
        return (self.namespace, self.name)


class Snapshot(_Strict):
    """Every recipient the enforcement points know, at one registry version."""

    version: int = 0
    revision: str = ""
    generated_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    recipients: tuple[Recipient, ...] = ()
    workloads: tuple[Workload, ...] = ()

    @model_validator(mode="after")
    def _unique_ids(self) -> Snapshot:
        seen: set[str] = set()
        for r in self.recipients:
            if r.id in seen:
                raise ValueError(f"duplicate recipient id {r.id!r}")
            seen.add(r.id)
        keys: set[tuple[str, str]] = set()
        for w in self.workloads:
            if w.key in keys:
                raise ValueError(f"duplicate workload {w.namespace}/{w.name}")
            keys.add(w.key)
        return self

    def recipient(self, recipient_id: str) -> Recipient | None:
        return next((r for r in self.recipients if r.id == recipient_id), None)

    def workload(self, namespace: str, name: str) -> Workload | None:
        return next((w for w in self.workloads if w.key == (namespace, name)), None)

    @property
    def is_source_bound(self) -> bool:
        """Source binding is on as soon as the registry declares any workload (any status)."""
        return bool(self.workloads)

    def source_binding(self) -> dict[str, Any]:
        """What start-up lines and `sharewall check` say about source binding (stable keys)."""
        return {"source_binding": self.is_source_bound, "workloads": len(self.workloads)}

    def policy_data(self) -> dict[str, Any]:
        """The snapshot as Rego sees it at `data.sharewall.registry`."""
        return policy_data_of(self.model_dump(mode="json"))

    def with_revision(self) -> Snapshot:
        """Return a copy whose `revision` is the SHA-256 of its content (stable across loads)."""
        return self.model_copy(
            update={
                "revision": content_revision(
                    [r.model_dump(mode="json") for r in self.recipients],
                    [w.model_dump(mode="json") for w in self.workloads],
                )
            }
        )


# Recipient fields that are for people, not for the policy (kept out of Rego's data and bundles).
_PRIVATE_RECIPIENT_FIELDS = ("owner_team", "contract_ref", "notes")


def policy_data_of(document: dict[str, Any]) -> dict[str, Any]:
    """The registry as Rego sees it at `data.sharewall.registry`, from a snapshot's JSON form.

    The one conversion used by the embedded engine, the OPA push and the OPA bundle:
    `recipients` keyed by id, `workloads` keyed by namespace then name (empty when the registry
    declares none, which turns source binding off).
    """
    workloads: dict[str, dict[str, Any]] = {}
    for w in document.get("workloads") or ():
        workloads.setdefault(w["namespace"], {})[w["name"]] = {
            "namespace": w["namespace"],
            "name": w["name"],
            "status": w["status"],
            "purposes": list(w["purposes"]),
            "recipients": None if w.get("recipients") is None else list(w["recipients"]),
        }
    return {
        "version": document["version"],
        "revision": document["revision"],
        "recipients": {
            r["id"]: {k: v for k, v in r.items() if k not in _PRIVATE_RECIPIENT_FIELDS}
            for r in document["recipients"]
        },
        "workloads": workloads,
    }


def content_revision(recipients: list[dict[str, Any]], workloads: list[dict[str, Any]]) -> str:
    """SHA-256 (16 hex digits) of a snapshot's content in its JSON form.

    Without workloads it hashes the recipient list alone, so a registry that declares none keeps
    the revision it had before workloads existed.
    """
    content: Any = (
        recipients if not workloads else {"recipients": recipients, "workloads": workloads}
    )
    body = orjson.dumps(content, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(body).hexdigest()[:16]
