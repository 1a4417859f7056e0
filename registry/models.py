"""The registry's tables (sqlmodel): recipients, grants, approvals, tokens, audit, flows, ledger.

Conventions every writer relies on:

- Times are timezone-aware UTC (`utcnow()`); SQLite hands them back naive, so read them
  through `as_utc()`.
- JSON columns use `sqlalchemy.JSON`, portable between SQLite and PostgreSQL.
- `registry_state` has exactly one row (id 1); its `version` goes up by one in the same
  transaction as every change that alters what the snapshot holds.
- Ledger key columns are NOT NULL (empty string for "unknown") because SQL treats NULLs as
  distinct in a unique constraint, which would let a re-sent count add up twice.
- `flow_reason` / `flow_category` repeat the flow's `time` so that "reason X, newest first"
  is one index range scan on (code, time) instead of a join over every flow with that code.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

# Stable constraint names make migrations (and SQLite batch rebuilds) reproducible.
SQLModel.metadata.naming_convention = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

RECIPIENT_STATUSES = ("proposed", "approved", "suspended", "revoked")
GRANT_STATUSES = ("proposed", "approved", "revoked")
APPROVAL_ACTIONS = ("approve", "suspend", "revoke")
ROLES = ("engineer", "security", "proxy", "admin")
TRIAGE_STATES = ("new", "acknowledged", "false_positive", "escalated")

# A 64-bit id on PostgreSQL; SQLite only auto-increments an INTEGER PRIMARY KEY.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UtcDateTime = sa.DateTime(timezone=True)


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def as_utc(value: datetime | None) -> datetime | None:
    """Read back a stored time as aware UTC (SQLite drops the zone)."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


class Recipient(SQLModel, table=True):
    """A registered third party; `version` increases on every edit (optimistic concurrency).

    Every write that changes what the snapshot holds of a recipient (its columns, status,
    hosts, approved grants, an approved pending change) increases `version` in the same
    transaction: it is the ETag, and the snapshot hub re-reads only recipients whose
    `(version, created_at)` moved since its last build.
    """

    __tablename__ = "recipient"

    id: str = Field(primary_key=True, max_length=63)
    name: str = Field(max_length=200)
    kind: str = Field(max_length=32)
    status: str = Field(default="proposed", max_length=16, index=True)
    regions: list[str] = Field(default_factory=list, sa_type=sa.JSON)
    tls_origination: bool = False
    inspect_tls: bool = False
    owner_team: str | None = Field(default=None, max_length=200)
    contract_ref: str | None = Field(default=None, max_length=200)
    notes: str | None = Field(default=None, sa_type=sa.Text)
    proposed_by: str = Field(max_length=200)
    updated_by: str = Field(max_length=200)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    version: int = 1
    # A live recipient's proposed field values (only those that differ from the live ones),
    # awaiting approval; the live columns above stay what the proxies enforce until then.
    pending: dict[str, Any] | None = Field(default=None, sa_type=sa.JSON)


class RecipientHost(SQLModel, table=True):
    """A host pattern (exact or `*.` wildcard, optional `:port`); one recipient owns a pattern."""

    __tablename__ = "recipient_host"

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    recipient_id: str = Field(
        foreign_key="recipient.id",
        ondelete="CASCADE",
        max_length=63,
        index=True,
    )
    pattern: str = Field(max_length=260, unique=True)
    # None: live. On a live recipient, "add" / "remove" mark a pending (unapproved) change.
    change: str | None = Field(default=None, max_length=8)


class Grant(SQLModel, table=True):
    """What a recipient may receive for one purpose; only `approved` grants reach the snapshot."""

    __tablename__ = "grant"

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    recipient_id: str = Field(
        foreign_key="recipient.id",
        ondelete="CASCADE",
        max_length=63,
        index=True,
    )
    purpose: str = Field(max_length=64)
    categories: list[str] = Field(default_factory=list, sa_type=sa.JSON)
    legal_basis: str | None = Field(default=None, max_length=64)
    expires: date | None = None
    status: str = Field(default="proposed", max_length=16)
    proposed_by: str = Field(max_length=200)
    approved_by: str | None = Field(default=None, max_length=200)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    # An approved grant of a live recipient with a pending edit ("update", values in
    # `pending`) or removal ("remove"); a pending addition is a `proposed` grant.
    change: str | None = Field(default=None, max_length=8)
    pending: dict[str, Any] | None = Field(default=None, sa_type=sa.JSON)


class Approval(SQLModel, table=True):
    """A reviewer's decision on a recipient or grant (approve, suspend, revoke)."""

    __tablename__ = "approval"
    __table_args__ = (sa.Index(None, "entity_type", "entity_id"),)

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    entity_type: str = Field(max_length=32)
    entity_id: str = Field(max_length=320)
    action: str = Field(max_length=16)
    actor: str = Field(max_length=200)
    time: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    note: str | None = Field(default=None, sa_type=sa.Text)


class Workload(SQLModel, table=True):
    """A calling workload and the purposes (and optionally recipients) it may declare.

    Reviewed like a recipient: a live (approved or suspended) workload's edit waits in
    `pending` (the proposed `purposes` / `recipients`) until a second person approves it;
    the snapshot carries live workloads only, at their live values.
    """

    __tablename__ = "workload"

    namespace: str = Field(primary_key=True, max_length=63)
    name: str = Field(primary_key=True, max_length=253)
    status: str = Field(default="proposed", max_length=16, index=True)
    purposes: list[str] = Field(default_factory=list, sa_type=sa.JSON)
    # None: any registered recipient.
    recipients: list[str] | None = Field(default=None, sa_type=sa.JSON)
    pending: dict[str, Any] | None = Field(default=None, sa_type=sa.JSON)
    proposed_by: str = Field(max_length=200)
    updated_by: str = Field(max_length=200)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    version: int = 1


class ApiToken(SQLModel, table=True):
    """A bearer token: only its SHA-256 is stored; `owner` (a person) is the audit actor.

    Four eyes compare owners: two tokens of one person (say an engineer and a security
    token) count as one person.
    """

    __tablename__ = "api_token"

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    name: str = Field(max_length=200)
    owner: str = Field(max_length=200, index=True)
    role: str = Field(max_length=16)
    token_hash: str = Field(max_length=64, unique=True)
    # The first token of its rotation lineage (None: this token is the first). A rotated
    # token ships as its lineage (`shipper_id`), so what it re-sends is the same proxy's.
    lineage_id: int | None = Field(default=None, sa_type=sa.BigInteger)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    last_used_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    revoked_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    # When the token stops authenticating (None: never): set on a rotated token, the end of
    # its grace. A token with an expiry was rotated and cannot be rotated again.
    expires_at: datetime | None = Field(default=None, sa_type=UtcDateTime)

    @property
    def shipper_id(self) -> int:
        """The identity what this token ships is stored under: its lineage's first token."""
        assert self.id is not None
        return self.lineage_id or self.id


class AuditEvent(SQLModel, table=True):
    """One change, append-only: who did what to which entity, with before/after images.

    `actor` is the person (the token's owner), `token_name` the token they used; `scope`
    names the reviewed entity the event belongs to (`recipient:<id>` for the recipient and
    its grants, `workload:<ns>/<name>`), so four eyes can read who authored a change since
    its last approval; `note` is a reviewer's note (approve, reject, suspend, revoke).
    """

    __tablename__ = "audit_event"
    __table_args__ = (
        sa.Index(None, "entity_type", "entity_id"),
        sa.Index(None, "time"),
        sa.Index(None, "scope", "id"),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    time: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    actor: str = Field(max_length=200, index=True)
    action: str = Field(max_length=64)
    entity_type: str = Field(max_length=32)
    entity_id: str = Field(max_length=320)
    before: dict[str, Any] | None = Field(default=None, sa_type=sa.JSON)
    after: dict[str, Any] | None = Field(default=None, sa_type=sa.JSON)
    token_name: str | None = Field(default=None, max_length=200)
    scope: str | None = Field(default=None, max_length=330)
    note: str | None = Field(default=None, sa_type=sa.Text)


class RegistryState(SQLModel, table=True):
    """The single row (id 1) holding the snapshot version."""

    __tablename__ = "registry_state"

    id: int = Field(default=1, primary_key=True)
    version: int = 0
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)


class BlockedFlow(SQLModel, table=True):
    """A blocked (enforce) or would-block (report mode) decision shipped by a proxy."""

    __tablename__ = "blocked_flow"
    __table_args__ = (
        sa.Index(None, "time"),
        sa.Index(None, "recipient_id", "time"),
        sa.Index(None, "triage_state", "time"),
        sa.Index(None, "source_workload", "time"),
    )

    # Keyed by (shipper, decision id): one proxy can never shadow or block another's record.
    # `token_id` is the shipping identity (`ApiToken.shipper_id`); 0 for flows stored before
    # migration 0008.
    token_id: int = Field(
        primary_key=True, sa_type=sa.BigInteger, sa_column_kwargs={"server_default": "0"}
    )
    decision_id: str = Field(primary_key=True, max_length=64)
    time: datetime = Field(sa_type=UtcDateTime)
    action: str = Field(max_length=16)
    would_block: bool = False
    mode: str = Field(default="enforce", max_length=16)
    recipient_id: str | None = Field(default=None, max_length=63)
    host: str = Field(default="", max_length=260)
    method: str = Field(default="", max_length=16)
    path: str = Field(default="", sa_type=sa.Text)
    purpose: str | None = Field(default=None, max_length=64)
    categories: list[str] = Field(default_factory=list, sa_type=sa.JSON)
    reason_codes: list[str] = Field(default_factory=list, sa_type=sa.JSON)
    source_workload: str | None = Field(default=None, max_length=200)
    source_namespace: str | None = Field(default=None, max_length=200)
    findings: list[dict[str, Any]] = Field(default_factory=list, sa_type=sa.JSON)
    latency_ms: float | None = None
    proxy_id: str | None = Field(default=None, max_length=200)
    # A fault of sharewall (the call failed closed) rather than a policy denial; `status` is
    # what the app got (403, 503); `reasons` keep each code's category ([{code, category?}]).
    fault: str | None = Field(default=None, max_length=64)
    status: int | None = None
    reasons: list[dict[str, Any]] = Field(default_factory=list, sa_type=sa.JSON)
    triage_state: str = Field(default="new", max_length=16)
    triage_note: str | None = Field(default=None, sa_type=sa.Text)
    triaged_by: str | None = Field(default=None, max_length=200)
    triaged_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    # Goes up with each triage: the flow's ETag, what a triage's If-Match names.
    version: int = Field(default=1, sa_column_kwargs={"server_default": "1"})


def _flow_key(table: str) -> tuple[sa.ForeignKeyConstraint]:
    return (
        sa.ForeignKeyConstraint(
            ["token_id", "decision_id"],
            ["blocked_flow.token_id", "blocked_flow.decision_id"],
            ondelete="CASCADE",
            name=f"fk_{table}_token_id_blocked_flow",
        ),
    )


class FlowReason(SQLModel, table=True):
    """One reason code of a blocked flow (normalised for indexed filtering)."""

    __tablename__ = "flow_reason"
    __table_args__ = (sa.Index(None, "code", "time"), *_flow_key("flow_reason"))

    token_id: int = Field(
        primary_key=True, sa_type=sa.BigInteger, sa_column_kwargs={"server_default": "0"}
    )
    decision_id: str = Field(primary_key=True, max_length=64)
    code: str = Field(primary_key=True, max_length=64)
    time: datetime = Field(sa_type=UtcDateTime)


class FlowCategory(SQLModel, table=True):
    """One data category of a blocked flow (normalised for indexed filtering)."""

    __tablename__ = "flow_category"
    __table_args__ = (sa.Index(None, "category", "time"), *_flow_key("flow_category"))

    token_id: int = Field(
        primary_key=True, sa_type=sa.BigInteger, sa_column_kwargs={"server_default": "0"}
    )
    decision_id: str = Field(primary_key=True, max_length=64)
    category: str = Field(primary_key=True, max_length=64)
    time: datetime = Field(sa_type=UtcDateTime)


class LedgerEntry(SQLModel, table=True):
    """Allowed calls counted per minute and key; a re-sent count replaces, never adds.

    The key starts with the shipping identity (`token_id`: `ApiToken.shipper_id`, the same
    across a rotation; 0 for rows stored before migration 0008): a proxy replaces only its own
    counts, whatever `proxy_id` it names.
    """

    __tablename__ = "ledger_entry"
    __table_args__ = (
        sa.UniqueConstraint(
            "token_id",
            "proxy_id",
            "minute",
            "source_workload",
            "source_namespace",
            "recipient_id",
            "purpose",
            "category",
            name="uq_ledger_entry_key",  # the generated name passes PostgreSQL's 63-byte limit
        ),
        sa.Index(None, "recipient_id", "minute"),
        sa.Index(None, "minute"),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    minute: datetime = Field(sa_type=UtcDateTime)
    source_workload: str = Field(default="", max_length=200)
    source_namespace: str = Field(default="", max_length=200)
    recipient_id: str = Field(default="", max_length=63)
    purpose: str = Field(default="", max_length=64)
    category: str = Field(default="", max_length=64)
    proxy_id: str = Field(default="", max_length=200)
    token_id: int = Field(
        default=0, sa_type=sa.BigInteger, sa_column_kwargs={"server_default": "0"}
    )
    count: int = 0


class DecisionFact(SQLModel, table=True):
    """Calls counted per hour and per distinct policy fact: everything the policy decided on.

    The impact of a registry change replays each distinct fact of a window once through the
    policy (`registry.impact`). `categories` and `reason_codes` are sorted, comma-joined sets;
    `fact_key` is the SHA-256 of the fact columns. Counts of every proxy add up here; which
    (proxy, minute, fact) rows were already counted is kept in `decision_fact_shipped`.
    """

    __tablename__ = "decision_fact"
    __table_args__ = (
        sa.UniqueConstraint("hour", "fact_key", name="uq_decision_fact_key"),
        # Covers the impact replay's query over an hour range, and retention's deletes by hour.
        sa.Index("ix_decision_fact_window", "hour", "fact_key", "count"),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    hour: datetime = Field(sa_type=UtcDateTime)
    fact_key: str = Field(max_length=64)
    source_workload: str = Field(default="", max_length=200)
    source_namespace: str = Field(default="", max_length=200)
    host: str = Field(default="", max_length=260)
    port: int = 0
    recipient_id: str = Field(default="", max_length=63)
    purpose: str = Field(default="", max_length=64)
    categories: str = Field(default="", max_length=2000)
    scheme: str = Field(default="", max_length=8)
    inspected: bool = True
    tls_upstream: bool = True
    complete: bool = True
    verdict: str = Field(default="allow", max_length=8)
    reason_codes: str = Field(default="", max_length=1000)
    count: int = Field(default=0, sa_type=sa.BigInteger())


class DecisionFactShipped(SQLModel, table=True):
    """The (token, proxy, minute, fact) rows already counted: a re-sent row is not counted twice.

    A proxy ships a minute once it is over, whole, so a re-send (a retry after a lost answer)
    carries the same count and is simply skipped. Keyed by the shipping identity too
    (`ApiToken.shipper_id`; 0 for rows of before migration 0008), so another proxy's token
    cannot mark a row seen, and a rotated token's re-send is skipped.
    """

    __tablename__ = "decision_fact_shipped"
    __table_args__ = (sa.Index(None, "minute"),)

    token_id: int = Field(
        primary_key=True, sa_type=sa.BigInteger, sa_column_kwargs={"server_default": "0"}
    )
    proxy_id: str = Field(primary_key=True, max_length=200)
    minute: datetime = Field(primary_key=True, sa_type=UtcDateTime)
    fact_key: str = Field(primary_key=True, max_length=64)


class ProxyBinding(SQLModel, table=True):
    """A proxy id and the shipping identity (`ApiToken.shipper_id`) that first shipped as it:
    only that identity (any token of its rotation lineage) may ship as the proxy id.

    `used_at` is when it last shipped as it (to within `ingest.BINDING_USE_EVERY`); the
    retention job releases a binding unused for `Settings.proxy_id_idle_days`."""

    __tablename__ = "proxy_binding"

    proxy_id: str = Field(primary_key=True, max_length=200)
    token_id: int = Field(sa_type=sa.BigInteger, index=True)
    bound_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    used_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime, index=True)


metadata = SQLModel.metadata
