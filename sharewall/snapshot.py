"""The registry snapshot: the schema shared by the YAML file, the registry API, the proxy and Rego.

One declaration, in msgspec Structs (frozen, unknown fields rejected); each value's check is
written once, in the Struct's `__post_init__`, which msgspec runs whether the value is
constructed, converted from decoded data (`from_data`) or decoded from JSON (`from_json`).
Every reader (the registry file loader, the registry API's request bodies, the snapshot the
proxy follows) gets the same `SchemaError`, which names the field. msgspec rather than pydantic:
the proxy holds this schema all day, and pydantic with its schema built cost ~12 MB of each
sidecar's memory (msgspec ~1.4 MB).
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, date, datetime
from typing import Any, Literal, Self

import msgspec
import orjson
from msgspec.structs import force_setattr

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


class SchemaError(ValueError):
    """Data that does not fit the schema: where (`loc`, field names and list indexes) and why."""

    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        super().__init__(f"{'.'.join(map(str, loc)) or '(value)'}: {message}")
        self.loc, self.message = loc, message


# msgspec's messages: "<why> - at `$.grants[0].expires`"; a check of ours says "<field>: <why>"
# (msgspec gives the place of the Struct it ran on, not of the field).
_AT = " - at `$"
_PATH_PART_RE = re.compile(r"\.([^.\[]+)|\[(\d+)\]")
_FIELD_MESSAGE_RE = re.compile(r"^Object (missing required|contains unknown) field `([^`]+)`$")
_FIELD_MESSAGES = {"missing required": "field required", "contains unknown": "unknown field"}
_FIELD_SEP = ": "


def _schema_error(exc: msgspec.ValidationError) -> SchemaError:
    message, _, path = str(exc).partition(_AT)
    loc: list[str | int] = [
        name or int(index) for name, index in _PATH_PART_RE.findall(path.removesuffix("`"))
    ]
    known = _FIELD_MESSAGE_RE.match(message)
    if known:
        loc.append(known[2])
        message = _FIELD_MESSAGES[known[1]]
    else:
        field, sep, why = message.partition(_FIELD_SEP)
        if sep and field.isidentifier():
            loc.append(field)
            message = why
    return SchemaError(tuple(loc), message)


def _invalid(field: str, why: str) -> ValueError:
    """A check of ours failing: msgspec passes the message on, `_schema_error` reads the field."""
    return ValueError(f"{field}{_FIELD_SEP}{why}")


def _unique(values: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values)) if len(values) > 1 else values


class SchemaModel(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A schema entry: immutable, unknown fields rejected, strings stripped of outer spaces."""

    def __post_init__(self) -> None:
        # Outer whitespace is never meant ("twilio " in a YAML file is "twilio").
        for name in self.__struct_fields__:
            value = getattr(self, name)
            if type(value) is str:
                if value != (stripped := value.strip()):
                    force_setattr(self, name, stripped)
            elif type(value) is tuple and value and type(value[0]) is str:
                stripped_all = tuple(v.strip() for v in value)
                if stripped_all != value:
                    force_setattr(self, name, stripped_all)

    @classmethod
    def from_data(cls, data: Any) -> Self:
        """Validate decoded data (JSON's or YAML's types); `SchemaError` naming the field."""
        try:
            return msgspec.convert(data, cls)
        except msgspec.ValidationError as exc:
            raise _schema_error(exc) from None

    @classmethod
    def from_json(cls, body: bytes | str) -> Self:
        """Decode and validate JSON text; `SchemaError` naming the field."""
        try:
            return msgspec.json.decode(body, type=cls)
        except msgspec.ValidationError as exc:
            raise _schema_error(exc) from None
        except msgspec.DecodeError as exc:
            raise SchemaError((), f"not valid JSON: {exc}") from None

    def to_data(self) -> dict[str, Any]:
        """The JSON form (dates as ISO 8601 text, tuples as lists)."""
        return msgspec.json.decode(msgspec.json.encode(self))

    def to_json(self) -> bytes:
        return msgspec.json.encode(self)

    def replace(self, **changes: Any) -> Self:
        """A copy with `changes` (checked again, as a constructed value is)."""
        return msgspec.structs.replace(self, **changes)

    @classmethod
    def json_schema(cls, ref_template: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """(this model's JSON Schema, the schemas it refers to by name), for an API document."""
        _, components = msgspec.json.schema_components((cls,), ref_template=ref_template)
        # Through JSON once: tuple defaults become lists, as a document has them.
        components = msgspec.json.decode(msgspec.json.encode(components))
        return components.pop(cls.__name__), components


class Grant(SchemaModel, frozen=True, kw_only=True):
    """What a recipient may receive for one purpose."""

    purpose: str
    categories: tuple[str, ...] = ()
    legal_basis: str | None = None
    expires: date | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        taxonomy = load_taxonomy()
        if not taxonomy.is_purpose(self.purpose):
            raise _invalid("purpose", f"unknown purpose {self.purpose!r}")
        unknown = [c for c in self.categories if not taxonomy.is_category(c)]
        if unknown:
            plural = "y" if len(unknown) == 1 else "ies"
            raise _invalid("categories", f"unknown categor{plural} {unknown}")
        force_setattr(self, "categories", _unique(self.categories))
        if self.legal_basis is not None and self.legal_basis not in taxonomy.legal_bases:
            raise _invalid("legal_basis", f"unknown legal basis {self.legal_basis!r}")

    def is_active_on(self, day: date) -> bool:
        """An expired grant grants nothing; `expires` is the last valid day (UTC)."""
        return self.expires is None or self.expires >= day


class Recipient(SchemaModel, frozen=True, kw_only=True):
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

    def __post_init__(self) -> None:
        super().__post_init__()
        if not SLUG_RE.match(self.id):
            raise _invalid(
                "id", "must be a slug: lowercase letters, digits, '-' or '_', 1-63 chars"
            )
        if not load_taxonomy().is_recipient_kind(self.kind):
            raise _invalid("kind", f"unknown recipient kind {self.kind!r}")
        bad = [r for r in self.regions if not REGION_RE.match(r)]
        if bad:
            raise _invalid("regions", f"not ISO 3166 alpha-2 codes: {bad}")
        force_setattr(self, "regions", _unique(self.regions))
        # The proxy's own parser: what the registry accepts is exactly what the proxy matches.
        try:
            hosts = tuple(dict.fromkeys(normalise_host_pattern(host) for host in self.hosts))
        except ValueError as exc:
            raise _invalid("hosts", str(exc)) from None
        force_setattr(self, "hosts", hosts)

    def active_grants(self, day: date) -> tuple[Grant, ...]:
        return tuple(g for g in self.grants if g.is_active_on(day))


class Workload(SchemaModel, frozen=True, kw_only=True):
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

    def __post_init__(self) -> None:
        super().__post_init__()
        if not NAMESPACE_RE.match(self.namespace):
            raise _invalid(
                "namespace",
                "must be a Kubernetes namespace: lowercase letters, digits and '-', 1-63 chars",
            )
        if not WORKLOAD_NAME_RE.match(self.name):
            raise _invalid(
                "name",
                "must be a Kubernetes name: lowercase letters, digits, '-' and '.', 1-253 chars",
            )
        if not self.purposes:
            raise _invalid("purposes", "at least one purpose is required")
        taxonomy = load_taxonomy()
        unknown = [p for p in self.purposes if not taxonomy.is_purpose(p)]
        if unknown:
            plural = "" if len(unknown) == 1 else "s"
            raise _invalid("purposes", f"unknown purpose{plural} {unknown}")
        force_setattr(self, "purposes", _unique(self.purposes))
        if self.recipients is not None:
            if not self.recipients:
                # An empty list would silently forbid every call; absence is how to allow any.
                raise _invalid(
                    "recipients",
                    "must not be empty: leave it out to allow any registered recipient",
                )
            bad = [r for r in self.recipients if not SLUG_RE.match(r)]
            if bad:
                raise _invalid("recipients", f"not recipient ids: {bad}")
            force_setattr(self, "recipients", _unique(self.recipients))

    @property
    def key(self) -> tuple[str, str]:
        """(namespace, name): a workload's identity."""
        return (self.namespace, self.name)


def _now() -> datetime:
    return datetime.now(UTC)


class Snapshot(SchemaModel, frozen=True, kw_only=True):
    """Every recipient the enforcement points know, at one registry version."""

    version: int = 0
    revision: str = ""
    generated_at: datetime = msgspec.field(default_factory=_now)
    recipients: tuple[Recipient, ...] = ()
    workloads: tuple[Workload, ...] = ()

    # No uniqueness walk on construction: a snapshot assembled from checked entries (the file
    # loader, a delta) is not walked again; one read whole is (`from_data`, `from_json`).
    @classmethod
    def from_data(cls, data: Any) -> Self:
        """Validate a decoded snapshot; `SchemaError` naming the field (or a duplicate)."""
        return super().from_data(data)._unique()

    @classmethod
    def from_json(cls, body: bytes | str) -> Self:
        """Decode and validate a snapshot's JSON; `SchemaError` naming the field."""
        return super().from_json(body)._unique()

    def _unique(self) -> Self:
        seen: set[str] = set()
        for r in self.recipients:
            if r.id in seen:
                raise SchemaError(("recipients",), f"duplicate recipient id {r.id!r}")
            seen.add(r.id)
        keys: set[tuple[str, str]] = set()
        for w in self.workloads:
            if w.key in keys:
                raise SchemaError(("workloads",), f"duplicate workload {w.namespace}/{w.name}")
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
        return policy_data_of(self.to_data())

    def with_revision(self) -> Snapshot:
        """Return a copy whose `revision` is the SHA-256 of its content (stable across loads)."""
        return self.replace(
            revision=content_revision(
                [r.to_data() for r in self.recipients], [w.to_data() for w in self.workloads]
            )
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
