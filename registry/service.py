"""Recipients and grants: propose, edit, review (four eyes), delete — with audit and versioning.

Every function here works inside the caller's session and never commits: the caller (an API
handler, `registry apply`) commits once, so a change, its audit events and the snapshot
version bump land together or not at all. Functions return `SnapshotChange` when what the
enforcement points see changed, so the caller can wake long-polling proxies after commit.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from registry.audit import record_audit
from registry.errors import ApiError, conflict, forbidden, invalid_field, not_found
from registry.models import Approval, Grant, Recipient, RecipientHost, as_utc, utcnow
from registry.payloads import GrantCreate, GrantPatch, RecipientCreate, RecipientPatch
from registry.state import bump_snapshot_version
from sharewall import snapshot as schema

# Editing these on an approved recipient changes where data may go or under which rules, so
# the recipient goes back to `proposed` until a second person approves it again.
MATERIAL_FIELDS = ("kind", "regions", "hosts", "tls_origination")
RECIPIENT_FIELDS = (
    "name",
    "kind",
    "status",
    "regions",
    "tls_origination",
    "inspect_tls",
    "owner_team",
    "contract_ref",
    "notes",
)
GRANT_FIELDS = ("purpose", "categories", "legal_basis", "expires")


@dataclass(frozen=True)
class Actor:
    """Who makes a change: the token name (audit actor) and its role."""

    name: str
    role: str


# --------------------------------------------------------------------------- views


def _jsonable(value: Any) -> Any:
    return orjson.loads(orjson.dumps(value))


def grant_view(grant: Grant) -> dict[str, Any]:
    """A grant as the API shows it."""
    return {
        "id": grant.id,
        "purpose": grant.purpose,
        "categories": list(grant.categories),
        "legal_basis": grant.legal_basis,
        "expires": grant.expires,
        "status": grant.status,
        "proposed_by": grant.proposed_by,
        "approved_by": grant.approved_by,
        "created_at": as_utc(grant.created_at),
        "updated_at": as_utc(grant.updated_at),
    }


def recipient_view(
    recipient: Recipient, hosts: Iterable[RecipientHost], grants: Iterable[Grant]
) -> dict[str, Any]:
    """A recipient with its hosts and grants, as the API shows it."""
    return {
        "id": recipient.id,
        "name": recipient.name,
        "kind": recipient.kind,
        "status": recipient.status,
        "regions": list(recipient.regions),
        "hosts": sorted(h.pattern for h in hosts),
        "tls_origination": recipient.tls_origination,
        "inspect_tls": recipient.inspect_tls,
        "owner_team": recipient.owner_team,
        "contract_ref": recipient.contract_ref,
        "notes": recipient.notes,
        "grants": [grant_view(g) for g in sorted(grants, key=lambda g: g.id or 0)],
        "proposed_by": recipient.proposed_by,
        "updated_by": recipient.updated_by,
        "created_at": as_utc(recipient.created_at),
        "updated_at": as_utc(recipient.updated_at),
        "version": recipient.version,
    }


@dataclass
class Loaded:
    """A recipient row with its host and grant rows."""

    recipient: Recipient
    hosts: list[RecipientHost]
    grants: list[Grant]

    def view(self) -> dict[str, Any]:
        return recipient_view(self.recipient, self.hosts, self.grants)

    def all_rows(self) -> list[Any]:
        return [self.recipient, *self.hosts, *self.grants]

    def image(self) -> dict[str, Any]:
        """The JSON image stored in audit events."""
        return _jsonable(self.view())


# --------------------------------------------------------------------------- reads


async def load_recipient(
    session: AsyncSession, recipient_id: str, *, for_update: bool = False
) -> Loaded:
    """Load a recipient with hosts and grants, or raise 404."""
    query = select(Recipient).where(Recipient.id == recipient_id)
    if for_update:
        query = query.with_for_update()  # no-op on SQLite, whose writes are serialised anyway
    recipient = (await session.exec(query)).first()
    if recipient is None:
        raise not_found("recipient", recipient_id)
    hosts = list(
        (
            await session.exec(
                select(RecipientHost).where(RecipientHost.recipient_id == recipient_id)
            )
        ).all()
    )
    grants = list(
        (
            await session.exec(
                select(Grant).where(Grant.recipient_id == recipient_id).order_by(Grant.id)
            )
        ).all()
    )
    return Loaded(recipient, hosts, grants)


async def list_recipients(
    session: AsyncSession,
    *,
    status: str | None = None,
    kind: str | None = None,
    after_id: str | None = None,
    limit: int = 100,
) -> list[Loaded]:
    """A page of recipients ordered by id (keyset pagination on id)."""
    query = select(Recipient).order_by(Recipient.id).limit(limit)
    if status is not None:
        query = query.where(Recipient.status == status)
    if kind is not None:
        query = query.where(Recipient.kind == kind)
    if after_id is not None:
        query = query.where(Recipient.id > after_id)
    recipients = list((await session.exec(query)).all())
    ids = [r.id for r in recipients]
    hosts: dict[str, list[RecipientHost]] = {i: [] for i in ids}
    grants: dict[str, list[Grant]] = {i: [] for i in ids}
    if ids:
        for host in (
            await session.exec(select(RecipientHost).where(RecipientHost.recipient_id.in_(ids)))
        ).all():
            hosts[host.recipient_id].append(host)
        for grant in (
            await session.exec(select(Grant).where(Grant.recipient_id.in_(ids)).order_by(Grant.id))
        ).all():
            grants[grant.recipient_id].append(grant)
    return [Loaded(r, hosts[r.id], grants[r.id]) for r in recipients]


# --------------------------------------------------------------------------- helpers


def forget(session: AsyncSession, rows: Iterable[Any]) -> None:
    """Drop rows deleted by a core DELETE from the session, so a reused id cannot collide."""
    for row in rows:
        if row in session:
            session.expunge(row)


def _check_version(loaded: Loaded, expected_version: int | None) -> None:
    if expected_version is not None and expected_version != loaded.recipient.version:
        raise ApiError(
            412,
            "version-mismatch",
            "Precondition failed",
            f"recipient {loaded.recipient.id} is at version {loaded.recipient.version}, "
            f"not {expected_version}; reload and retry",
            {"current_version": loaded.recipient.version},
        )


async def _check_hosts_free(
    session: AsyncSession, recipient_id: str, patterns: Iterable[str]
) -> None:
    patterns = list(patterns)
    if not patterns:
        return
    taken = (
        await session.exec(
            select(RecipientHost).where(
                RecipientHost.pattern.in_(patterns), RecipientHost.recipient_id != recipient_id
            )
        )
    ).all()
    if taken:
        owners = {h.pattern: h.recipient_id for h in taken}
        raise conflict(
            "hosts already registered to another recipient: "
            + ", ".join(f"{p} ({o})" for p, o in sorted(owners.items())),
            hosts=owners,
        )


# Column sizes (registry.models); the shared schema does not bound these strings.
_MAX_LENGTHS = {"name": 200, "owner_team": 200, "contract_ref": 200, "notes": 10_000}
_MAX_HOST_LENGTH = 260


def check_storable(recipient: schema.Recipient, where: str = "") -> None:
    """422 naming the field when a value exceeds what the database stores."""
    for name, limit in _MAX_LENGTHS.items():
        value = getattr(recipient, name)
        if value is not None and len(value) > limit:
            raise invalid_field(f"{where}{name}", f"at most {limit} characters")
    for host in recipient.hosts:
        if len(host) > _MAX_HOST_LENGTH:
            raise invalid_field(f"{where}hosts", f"at most {_MAX_HOST_LENGTH} characters")


def _validated_recipient(values: dict[str, Any]) -> schema.Recipient:
    """Validate merged recipient fields with the shared schema (422 naming the field)."""
    recipient = schema.Recipient.model_validate(values)
    check_storable(recipient)
    return recipient


def _validated_grant(values: dict[str, Any]) -> schema.Grant:
    return schema.Grant.model_validate(values)


def _touch(recipient: Recipient, actor: Actor) -> None:
    recipient.updated_by = actor.name
    recipient.updated_at = utcnow()
    recipient.version += 1


async def _bump(session: AsyncSession) -> int:
    return await bump_snapshot_version(session)


# --------------------------------------------------------------------------- recipients


async def create_recipient(session: AsyncSession, body: RecipientCreate, actor: Actor) -> Loaded:
    """Propose a new recipient (status `proposed`) with its hosts and grants."""
    check_storable(body)
    if await session.get(Recipient, body.id) is not None:
        raise conflict(f"recipient {body.id} already exists")
    await _check_hosts_free(session, body.id, body.hosts)
    now = utcnow()
    recipient = new_recipient_row(body, actor, status="proposed", now=now)
    session.add(recipient)
    await session.flush()
    hosts = [RecipientHost(recipient_id=body.id, pattern=p) for p in body.hosts]
    grants = [new_grant_row(body.id, g, actor, "proposed") for g in body.grants]
    session.add_all([*hosts, *grants])
    await session.flush()
    loaded = Loaded(recipient, hosts, grants)
    record_audit(
        session,
        actor=actor.name,
        action="recipient.create",
        entity_type="recipient",
        entity_id=body.id,
        after=loaded.image(),
    )
    await _bump(session)
    return loaded


def _grant_image(recipient_id: str, grant: Grant) -> dict[str, Any]:
    """A grant as the audit trail records it: its fields and its recipient."""
    return {"recipient_id": recipient_id, **_jsonable(grant_view(grant))}


def _audit_grant(
    session: AsyncSession,
    actor: Actor,
    verb: str,
    grant_id: int | None,
    *,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> None:
    """Record one `grant.<verb>` audit event in the change's transaction."""
    record_audit(
        session,
        actor=actor.name,
        action=f"grant.{verb}",
        entity_type="grant",
        entity_id=str(grant_id),
        before=before,
        after=after,
    )


def new_recipient_row(spec: Any, actor: Actor, *, status: str, now: datetime) -> Recipient:
    """A new recipient row from a create payload or a registry-file entry (same field names)."""
    return Recipient(
        id=spec.id,
        name=spec.name,
        kind=spec.kind,
        status=status,
        regions=list(spec.regions),
        tls_origination=spec.tls_origination,
        inspect_tls=spec.inspect_tls,
        owner_team=spec.owner_team,
        contract_ref=spec.contract_ref,
        notes=spec.notes,
        proposed_by=actor.name,
        updated_by=actor.name,
        created_at=now,
        updated_at=now,
        version=1,
    )


def new_grant_row(
    recipient_id: str,
    grant: schema.Grant,
    actor: Actor,
    status: str,
) -> Grant:
    """A new grant row proposed by `actor`; one created `approved` (by apply) is approved by them."""
    now = utcnow()
    return Grant(
        recipient_id=recipient_id,
        purpose=grant.purpose,
        categories=list(grant.categories),
        legal_basis=grant.legal_basis,
        expires=grant.expires,
        status=status,
        proposed_by=actor.name,
        approved_by=actor.name if status == "approved" else None,
        created_at=now,
        updated_at=now,
    )


async def update_recipient(
    session: AsyncSession,
    recipient_id: str,
    patch: RecipientPatch,
    actor: Actor,
    *,
    expected_version: int | None = None,
) -> Loaded:
    """Edit a recipient's fields and hosts; a material edit of an active one re-opens review."""
    loaded = await load_recipient(session, recipient_id, for_update=True)
    _check_version(loaded, expected_version)
    recipient = loaded.recipient
    before = loaded.image()
    changes = patch.model_dump(exclude_unset=True)
    current = {
        **{f: getattr(recipient, f) for f in RECIPIENT_FIELDS},
        "hosts": [h.pattern for h in loaded.hosts],
    }
    merged = _validated_recipient({"id": recipient.id, **current, **changes})
    new_values = {
        "name": merged.name,
        "kind": merged.kind,
        "regions": list(merged.regions),
        "tls_origination": merged.tls_origination,
        "inspect_tls": merged.inspect_tls,
        "owner_team": merged.owner_team,
        "contract_ref": merged.contract_ref,
        "notes": merged.notes,
    }
    changed = {k for k, v in new_values.items() if getattr(recipient, k) != v}
    old_hosts = {h.pattern for h in loaded.hosts}
    new_hosts = set(merged.hosts)
    if new_hosts != old_hosts:
        changed.add("hosts")
    if not changed:
        return loaded
    await _check_hosts_free(session, recipient.id, new_hosts - old_hosts)
    for key, value in new_values.items():
        setattr(recipient, key, value)
    if "hosts" in changed:
        await _replace_hosts(session, loaded, new_hosts)
    if recipient.status == "revoked" or (
        recipient.status != "proposed" and changed & set(MATERIAL_FIELDS)
    ):
        recipient.status = "proposed"
    _touch(recipient, actor)
    session.add(recipient)
    await session.flush()
    record_audit(
        session,
        actor=actor.name,
        action="recipient.update",
        entity_type="recipient",
        entity_id=recipient.id,
        before=before,
        after=loaded.image(),
    )
    await _bump(session)
    return loaded


async def _replace_hosts(session: AsyncSession, loaded: Loaded, patterns: set[str]) -> None:
    keep = [h for h in loaded.hosts if h.pattern in patterns]
    drop = [h.id for h in loaded.hosts if h.pattern not in patterns]
    if drop:
        # Core DELETE runs now, before the INSERTs below, so a host can move between rows.
        await session.exec(sa.delete(RecipientHost).where(RecipientHost.id.in_(drop)))
        forget(session, [h for h in loaded.hosts if h.pattern not in patterns])
    have = {h.pattern for h in keep}
    added = [
        RecipientHost(recipient_id=loaded.recipient.id, pattern=p) for p in sorted(patterns - have)
    ]
    session.add_all(added)
    await session.flush()
    loaded.hosts = keep + added


async def delete_recipient(
    session: AsyncSession, recipient_id: str, actor: Actor, *, expected_version: int | None = None
) -> None:
    """Delete a recipient with its hosts and grants (the audit event keeps the last image)."""
    loaded = await load_recipient(session, recipient_id, for_update=True)
    _check_version(loaded, expected_version)
    before = loaded.image()
    await session.exec(sa.delete(Recipient).where(Recipient.id == recipient_id))
    forget(session, loaded.all_rows())
    record_audit(
        session,
        actor=actor.name,
        action="recipient.delete",
        entity_type="recipient",
        entity_id=recipient_id,
        before=before,
    )
    await _bump(session)


# --------------------------------------------------------------------------- grants


def _find_grant(loaded: Loaded, grant_id: int) -> Grant:
    for grant in loaded.grants:
        if grant.id == grant_id:
            return grant
    raise not_found("grant", f"{grant_id} of recipient {loaded.recipient.id}")


async def add_grant(
    session: AsyncSession,
    recipient_id: str,
    body: GrantCreate,
    actor: Actor,
    *,
    expected_version: int | None = None,
) -> tuple[Loaded, Grant]:
    """Propose a grant on a recipient (always `proposed`, whatever the recipient's status)."""
    loaded = await load_recipient(session, recipient_id, for_update=True)
    _check_version(loaded, expected_version)
    grant = new_grant_row(recipient_id, body, actor, "proposed")
    session.add(grant)
    _touch(loaded.recipient, actor)
    session.add(loaded.recipient)
    await session.flush()
    loaded.grants.append(grant)
    _audit_grant(session, actor, "create", grant.id, after=_grant_image(recipient_id, grant))
    # A proposed grant is not in the snapshot; nothing for the proxies to fetch.
    return loaded, grant


async def update_grant(
    session: AsyncSession,
    recipient_id: str,
    grant_id: int,
    patch: GrantPatch,
    actor: Actor,
    *,
    expected_version: int | None = None,
) -> tuple[Loaded, Grant]:
    """Edit a grant; it goes back to `proposed` (only this grant) until approved again."""
    loaded = await load_recipient(session, recipient_id, for_update=True)
    _check_version(loaded, expected_version)
    grant = _find_grant(loaded, grant_id)
    before = _grant_image(recipient_id, grant)
    current = {f: getattr(grant, f) for f in GRANT_FIELDS}
    merged = _validated_grant({**current, **patch.model_dump(exclude_unset=True)})
    new_values = {
        "purpose": merged.purpose,
        "categories": list(merged.categories),
        "legal_basis": merged.legal_basis,
        "expires": merged.expires,
    }
    if all(getattr(grant, k) == v for k, v in new_values.items()):
        return loaded, grant
    was_visible = grant.status == "approved"
    for key, value in new_values.items():
        setattr(grant, key, value)
    grant.status = "proposed"
    grant.proposed_by = actor.name
    grant.approved_by = None
    grant.updated_at = utcnow()
    session.add(grant)
    _touch(loaded.recipient, actor)
    session.add(loaded.recipient)
    await session.flush()
    _audit_grant(
        session, actor, "update", grant.id, before=before, after=_grant_image(recipient_id, grant)
    )
    if was_visible:
        await _bump(session)
    return loaded, grant


async def delete_grant(
    session: AsyncSession,
    recipient_id: str,
    grant_id: int,
    actor: Actor,
    *,
    expected_version: int | None = None,
) -> Loaded:
    """Delete a grant."""
    loaded = await load_recipient(session, recipient_id, for_update=True)
    _check_version(loaded, expected_version)
    grant = _find_grant(loaded, grant_id)
    before = _grant_image(recipient_id, grant)
    await session.exec(sa.delete(Grant).where(Grant.id == grant_id))
    forget(session, [grant])
    loaded.grants = [g for g in loaded.grants if g.id != grant_id]
    _touch(loaded.recipient, actor)
    session.add(loaded.recipient)
    await session.flush()
    _audit_grant(session, actor, "delete", grant_id, before=before)
    if grant.status == "approved":
        await _bump(session)
    return loaded


async def revoke_grant(
    session: AsyncSession, recipient_id: str, grant_id: int, actor: Actor, note: str | None = None
) -> Loaded:
    """Revoke one grant (a reviewer's action; takes effect at the next snapshot)."""
    loaded = await load_recipient(session, recipient_id, for_update=True)
    grant = _find_grant(loaded, grant_id)
    if grant.status == "revoked":
        return loaded
    before = _grant_image(recipient_id, grant)
    was_visible = grant.status == "approved"
    grant.status = "revoked"
    grant.updated_at = utcnow()
    session.add(grant)
    loaded.recipient.version += 1
    session.add(loaded.recipient)
    session.add(_approval("grant", str(grant.id), "revoke", actor, note))
    await session.flush()
    _audit_grant(
        session, actor, "revoke", grant.id, before=before, after=_grant_image(recipient_id, grant)
    )
    if was_visible:
        await _bump(session)
    return loaded


# --------------------------------------------------------------------------- review


def _approval(entity_type: str, entity_id: str, action: str, actor: Actor, note: str | None):
    return Approval(
        entity_type=entity_type,
        entity_id=entity_id,
        action=action,
        actor=actor.name,
        time=utcnow(),
        note=note,
    )


def _four_eyes(actor: Actor, what: str, *authors: str | None) -> None:
    if actor.name in {a for a in authors if a}:
        raise forbidden(
            f"{what} was proposed or last changed by {actor.name}; "
            "a second person must approve it (four eyes)",
            type_slug="four-eyes",
        )


async def approve_recipient(
    session: AsyncSession,
    recipient_id: str,
    actor: Actor,
    note: str | None = None,
    *,
    expected_version: int | None = None,
) -> Loaded:
    """Approve a recipient and its proposed grants; the approver is never their author."""
    loaded = await load_recipient(session, recipient_id, for_update=True)
    _check_version(loaded, expected_version)
    recipient = loaded.recipient
    pending = [g for g in loaded.grants if g.status == "proposed"]
    if recipient.status == "revoked":
        raise conflict(f"recipient {recipient_id} is revoked; edit it to propose it again")
    if recipient.status == "approved" and not pending:
        raise conflict(f"recipient {recipient_id} has nothing awaiting approval")
    if recipient.status != "approved":
        _four_eyes(actor, f"recipient {recipient_id}", recipient.proposed_by, recipient.updated_by)
    for grant in pending:
        _four_eyes(actor, f"grant {grant.id} ({grant.purpose})", grant.proposed_by)
    before = loaded.image()
    now = utcnow()
    if recipient.status != "approved":
        recipient.status = "approved"
        session.add(_approval("recipient", recipient_id, "approve", actor, note))
    for grant in pending:
        grant_before = _grant_image(recipient_id, grant)
        grant.status = "approved"
        grant.approved_by = actor.name
        grant.updated_at = now
        session.add(grant)
        session.add(_approval("grant", str(grant.id), "approve", actor, note))
        await session.flush()
        _audit_grant(
            session,
            actor,
            "approve",
            grant.id,
            before=grant_before,
            after=_grant_image(recipient_id, grant),
        )
    # Reviewing is not editing: updated_by stays the author, so four eyes keep working.
    recipient.version += 1
    session.add(recipient)
    await session.flush()
    record_audit(
        session,
        actor=actor.name,
        action="recipient.approve",
        entity_type="recipient",
        entity_id=recipient_id,
        before=before,
        after=loaded.image(),
    )
    await _bump(session)
    return loaded


async def set_recipient_status(
    session: AsyncSession,
    recipient_id: str,
    action: str,
    actor: Actor,
    note: str | None = None,
    *,
    expected_version: int | None = None,
) -> Loaded:
    """Suspend (approved → suspended) or revoke (any → revoked) a recipient."""
    target = {"suspend": "suspended", "revoke": "revoked"}[action]
    loaded = await load_recipient(session, recipient_id, for_update=True)
    _check_version(loaded, expected_version)
    recipient = loaded.recipient
    if action == "suspend" and recipient.status != "approved":
        raise conflict(f"only an approved recipient can be suspended (it is {recipient.status})")
    if recipient.status == target:
        return loaded
    before = loaded.image()
    recipient.status = target
    recipient.version += 1
    session.add(recipient)
    session.add(_approval("recipient", recipient_id, action, actor, note))
    await session.flush()
    record_audit(
        session,
        actor=actor.name,
        action=f"recipient.{action}",
        entity_type="recipient",
        entity_id=recipient_id,
        before=before,
        after=loaded.image(),
    )
    await _bump(session)
    return loaded


def grants_by_purpose(grants: Sequence[Grant]) -> dict[str, list[Grant]]:
    """Group grant rows by purpose, oldest first."""
    out: dict[str, list[Grant]] = {}
    for grant in sorted(grants, key=lambda g: g.id or 0):
        out.setdefault(grant.purpose, []).append(grant)
    return out
