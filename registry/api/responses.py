"""Response bodies of the API as pydantic models: what handlers return and OpenAPI documents.

A model here is the one description of a body: the route declaration names it (so its JSON
schema lands in the OpenAPI document) and the handler returns an instance of it (so what is
answered is what is documented).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from registry.models import RECIPIENT_STATUSES, ROLES, TRIAGE_STATES


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class Status(_Out):
    """A health answer."""

    status: str


class GrantOut(_Out):
    """A grant with its review state."""

    id: int
    purpose: str
    categories: list[str]
    legal_basis: str | None = None
    expires: date | None = None
    status: Literal["proposed", "approved", "revoked"]
    proposed_by: str
    approved_by: str | None = None
    created_at: datetime
    updated_at: datetime


class RecipientOut(_Out):
    """A recipient with hosts, grants and version (its ETag)."""

    id: str
    name: str
    kind: str
    status: Literal[RECIPIENT_STATUSES]  # type: ignore[valid-type]
    regions: list[str]
    hosts: list[str]
    tls_origination: bool
    inspect_tls: bool
    owner_team: str | None = None
    contract_ref: str | None = None
    notes: str | None = None
    grants: list[GrantOut]
    proposed_by: str
    updated_by: str
    created_at: datetime
    updated_at: datetime
    version: int


class RecipientPage(_Out):
    """One page of recipients."""

    items: list[RecipientOut]
    next_cursor: str | None = None


class TokenOut(_Out):
    """An API token (never its secret or hash)."""

    id: int
    name: str
    role: Literal[ROLES]  # type: ignore[valid-type]
    created_at: datetime
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None


class TokenCreated(TokenOut):
    """A new token with its secret, shown this once."""

    secret: str = Field(description="Shown once; only its hash is kept")


class TokenList(_Out):
    """Every token."""

    items: list[TokenOut]


class AuditEventOut(_Out):
    """One append-only audit event."""

    id: int
    time: datetime
    actor: str
    action: str = Field(description="e.g. recipient.approve")
    entity_type: str
    entity_id: str
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None


class AuditPage(_Out):
    """One page of audit events, newest first."""

    items: list[AuditEventOut]
    next_cursor: str | None = None


class RecipientsDiff(_Out):
    """Recipients added (as written), changed (fields, hosts, grants) and removed (ids)."""

    added: list[dict[str, Any]]
    changed: list[dict[str, Any]]
    removed: list[str]


class ApplyOut(_Out):
    """What `registry apply` changed; `applied` is false for a dry run or when nothing changed."""

    changed: bool
    applied: bool
    version: int | None = None
    recipients: RecipientsDiff


class ReasonOut(_Out):
    """A reason code, its message, and the category it is about (when it has one)."""

    code: str
    message: str
    category: str | None = None


class SourceOut(_Out):
    """The calling workload."""

    workload: str | None = None
    namespace: str | None = None


class FindingOut(_Out):
    """Where a category was found in a call (never the value)."""

    category: str
    location: str = ""
    detector: str = ""


class TriageOut(_Out):
    """A reviewer's triage of a flow."""

    state: Literal[TRIAGE_STATES]  # type: ignore[valid-type]
    note: str | None = None
    by: str | None = None
    at: datetime | None = None


class FlowOut(_Out):
    """A blocked or would-block call."""

    decision_id: str
    time: datetime
    action: str
    would_block: bool
    mode: str
    kind: Literal["deny", "fault", "would_block"]
    fault: str | None = None
    status: int | None = None
    recipient_id: str | None = None
    host: str
    method: str
    path: str
    purpose: str | None = None
    categories: list[str]
    reasons: list[ReasonOut]
    source: SourceOut
    findings: list[FindingOut]
    latency_ms: float | None = None
    proxy_id: str
    triage: TriageOut


class FlowPage(_Out):
    """One page of flows, newest first."""

    flows: list[FlowOut]
    next_cursor: str | None = None


class LedgerGroup(_Out):
    """Allowed calls of one group; only the grouped dimensions are present."""

    model_config = ConfigDict(extra="allow")

    count: int
    first_minute: datetime
    last_minute: datetime


class LedgerOut(_Out):
    """Allowed calls summed by the dimensions asked for."""

    group_by: list[str]
    groups: list[LedgerGroup]
    total: int
