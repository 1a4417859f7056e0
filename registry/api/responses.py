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
    change: Literal["update", "remove"] | None = Field(
        default=None, description="A pending (unapproved) edit or removal of this approved grant"
    )
    proposed_by: str
    approved_by: str | None = None
    created_at: datetime
    updated_at: datetime


class PendingChangeOut(_Out):
    """What awaits approval, and its diff against what the proxies enforce now."""

    kind: Literal["proposal", "update"] = Field(
        description="proposal: the recipient is not live yet; update: a live recipient's "
        "staged edit"
    )
    proposed: dict[str, Any] = Field(
        description="The recipient as approving would make it live (registry-file shape)"
    )
    proposed_grant_ids: list[int] | None = Field(
        default=None,
        description="A recipient's: the id of each of `proposed.grants`, in order (edit one "
        "with PATCH /v1/recipients/{id}/grants/{gid})",
    )
    diff: dict[str, Any] = Field(
        description="fields {name: [live, proposed]}, hosts {added, removed}, "
        "grants {added, removed, changed} (changed: id, purpose, fields)"
    )
    live: dict[str, Any] | None = Field(
        default=None, description="What the proxies enforce now (null for a proposal)"
    )
    authors: list[str] | None = Field(
        default=None,
        description="People who authored it since the last approval: none of them may "
        "approve it (four eyes)",
    )
    version: int | None = Field(
        default=None, description='Approve exactly this change with If-Match: "<version>"'
    )
    updated_by: str | None = None
    updated_at: datetime | None = None


class ReviewOut(_Out):
    """A review decision (approve, reject, suspend, revoke) and its note."""

    action: str
    actor: str
    time: datetime
    note: str | None = None


class ChangeOut(PendingChangeOut):
    """A change awaiting approval (`GET /v1/changes`), with links to approve or reject it."""

    entity_type: Literal["recipient", "workload"]
    entity_id: str
    status: str
    links: dict[str, str]


class ChangeList(_Out):
    """Every change awaiting approval."""

    items: list[ChangeOut]


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
    pending_change: PendingChangeOut | None = Field(
        default=None, description="What awaits approval (the fields above are the live version)"
    )
    reviews: list[ReviewOut] | None = Field(
        default=None, description="GET of one recipient: review decisions with their notes"
    )


class WorkloadOut(_Out):
    """A workload: the purposes (and recipients) it may declare, its review state."""

    namespace: str
    name: str
    status: Literal[RECIPIENT_STATUSES]  # type: ignore[valid-type]
    purposes: list[str]
    recipients: list[str] | None = Field(default=None, description="null: any registered recipient")
    proposed_by: str
    updated_by: str
    created_at: datetime
    updated_at: datetime
    version: int
    pending_change: PendingChangeOut | None = None
    reviews: list[ReviewOut] | None = None


class WorkloadList(_Out):
    """Workloads ordered by namespace and name."""

    items: list[WorkloadOut]


class RecipientPage(_Out):
    """One page of recipients."""

    items: list[RecipientOut]
    next_cursor: str | None = None


class TokenOut(_Out):
    """An API token (never its secret or hash) and the person holding it."""

    id: int
    name: str
    owner: str = Field(description="The person holding it: the audit actor, what four eyes compare")
    role: Literal[ROLES]  # type: ignore[valid-type]
    shipper_id: int = Field(
        description="What the token ships is stored under this identity: the id of the first "
        "token of its rotation lineage (its own id unless it was made by a rotation)"
    )
    created_at: datetime
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None
    expires_at: datetime | None = Field(
        default=None,
        description="When it stops authenticating (a rotated token's old secret: the end of "
        "its grace); null: never",
    )


class TokenCreated(TokenOut):
    """A new token with its secret, shown this once."""

    secret: str = Field(description="Shown once; only its hash is kept")


class TokenRotated(TokenCreated):
    """The rotated token's successor with its secret (shown this once), and the old token."""

    previous: TokenOut = Field(
        description="The old token: its `expires_at` is when its secret stops authenticating"
    )


class TokenList(_Out):
    """Every token."""

    items: list[TokenOut]


class AuditEventOut(_Out):
    """One append-only audit event: who (the person, and the token used) did what, to what."""

    id: int
    time: datetime
    actor: str = Field(description="The person (the token's owner)")
    token_name: str | None = Field(default=None, description="The token used")
    action: str = Field(description="e.g. recipient.approve")
    entity_type: str
    entity_id: str
    scope: str | None = Field(
        default=None, description="The reviewed entity it belongs to (recipient:<id>)"
    )
    note: str | None = Field(default=None, description="A reviewer's note")
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
    workloads: RecipientsDiff | None = Field(
        default=None, description="Workloads added, changed and removed (ids namespace/name)"
    )
    awaiting_approval: list[str] = Field(
        default_factory=list,
        description="Recipients left with a change a reviewer must approve (GET /v1/changes)",
    )


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


class ShipperOut(_Out):
    """Who shipped a record: the registry's identity of the shipper (the `proxy_id` beside it
    is only what the shipper said it was). `token_id` is the shipping identity: the first
    token of a rotation lineage, whose name rotated tokens keep."""

    token_id: int
    token_name: str | None = None


class ProxyIdOut(_Out):
    """A proxy id and the shipper bound to it: only that shipper may ship as it."""

    proxy_id: str
    shipped_by: ShipperOut
    bound_at: datetime
    used_at: datetime = Field(
        description="When its shipper last shipped as it (to within an hour); the retention "
        "job releases a binding unused for `proxy_id_idle_days` (30 by default)"
    )


class ProxyIdList(_Out):
    """Proxy id bindings, by proxy id."""

    items: list[ProxyIdOut]
    next_cursor: str | None = None


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
    # None for flows stored before the registry recorded the shipping token (migration 0008).
    shipped_by: ShipperOut | None = None
    triage: TriageOut
    version: int = Field(description="Goes up with each triage; the flow's ETag")


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
