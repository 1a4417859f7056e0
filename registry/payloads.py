"""Request bodies of the management API (unknown fields rejected).

The bodies that create a recipient, a grant or a workload are entries of the shared schema
(`sharewall.snapshot`, msgspec Structs), with its checks (taxonomy ids, slugs, host patterns,
regions), so the API, the YAML file and the proxy accept exactly the same data. The others
(patches, notes, tokens) are the API's own, in pydantic.
"""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from registry.tokens import DEFAULT_GRACE_S, MAX_GRACE_S
from sharewall import snapshot


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class GrantCreate(snapshot.Grant, frozen=True, kw_only=True):
    """A grant to propose: purpose, categories, legal basis, optional expiry (last valid day)."""


class RecipientCreate(snapshot.Recipient, frozen=True, kw_only=True):
    """A recipient to propose; it starts `proposed` whatever the caller wishes."""

    status: Literal["proposed"] = "proposed"
    grants: tuple[GrantCreate, ...] = ()


class RecipientPatch(_Body):
    """Fields to change on a recipient; omitted fields keep their value."""

    name: str | None = None
    kind: str | None = None
    regions: list[str] | None = None
    hosts: list[str] | None = None
    tls_origination: bool | None = None
    inspect_tls: bool | None = None
    owner_team: str | None = None
    contract_ref: str | None = None
    notes: str | None = None


class WorkloadCreate(snapshot.Workload, frozen=True, kw_only=True):
    """A workload to propose; it starts `proposed` whatever the caller wishes."""

    status: Literal["proposed"] = "proposed"


class WorkloadPatch(_Body):
    """Purposes and/or recipients to change (`recipients: null`: any registered recipient)."""

    purposes: list[str] | None = None
    recipients: list[str] | None = None


class GrantPatch(_Body):
    """Fields to change on a grant; the grant goes back to `proposed` for review."""

    purpose: str | None = None
    categories: list[str] | None = None
    legal_basis: str | None = None
    expires: date | None = None


class ReviewNote(_Body):
    """An optional note kept with an approve / suspend / revoke decision."""

    note: str | None = Field(default=None, max_length=2000)


class TokenCreate(_Body):
    """A token to create: its name, the person holding it (default: the name) and a role."""

    name: str = Field(min_length=1, max_length=200)
    owner: str | None = Field(default=None, min_length=1, max_length=200)
    role: Literal["engineer", "security", "proxy", "admin"]


class TokenRotate(_Body):
    """How long the rotated token's old secret keeps authenticating (0: not at all)."""

    grace_seconds: int = Field(
        default=DEFAULT_GRACE_S,
        ge=0,
        le=MAX_GRACE_S,
        strict=True,
        description=f"Seconds the old secret still authenticates (default {DEFAULT_GRACE_S}, "
        f"at most {MAX_GRACE_S}); 0 revokes it at once",
    )


class ApplyRequest(_Body):
    """`registry apply` over the API: the YAML document's recipients, and whether to only diff."""

    recipients: list[dict]
    workloads: list[dict] | None = None
    dry_run: bool = False
