"""Recipients and grants: propose, edit, review (four eyes), delete — with audit and versioning.

Every function here works inside the caller's session and never commits: the caller (an API
handler, `registry apply`) commits once, so a change, its audit events and the snapshot
version bump land together or not at all.

An edit of a live (approved or suspended) recipient is staged as a pending change beside the
live values (see `registry.changes`): the proxies keep enforcing the approved version until a
reviewer who authored none of the change (`registry.four_eyes`) approves the version they
looked at (`If-Match`). Narrowing reviewer actions (suspend, revoke, revoke a grant) and
deletions take effect at once.
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

from registry import changes
from registry.audit import Actor, record_audit
from registry.changes import EDITABLE_FIELDS, is_live
from registry.errors import conflict, invalid_field, not_found
from registry.four_eyes import authored_since_approval, authors_of, check_four_eyes
from registry.models import Approval, Grant, Recipient, RecipientHost, as_utc, utcnow
from registry.payloads import GrantCreate, GrantPatch, RecipientCreate, RecipientPatch
from registry.preconditions import IfMatch, check_version, require_version
from registry.state import bump_snapshot_version
from sharewall import snapshot as schema

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


def scope_of(recipient_id: str) -> str:
    """The audit scope of a recipient and its grants (what four eyes read)."""
    return f"recipient:{recipient_id}"


# --------------------------------------------------------------------------- views


def _jsonable(value: Any) -> Any:
    return orjson.loads(orjson.dumps(value))


def grant_view(grant: Grant) -> dict[str, Any]:
    """A grant as the API shows it (its live values; `change` marks a pending edit)."""
    return {
        "id": grant.id,
        "purpose": grant.purpose,
        "categories": list(grant.categories),
        "legal_basis": grant.legal_basis,
        "expires": grant.expires,
        "status": grant.status,
        "change": grant.change,
        "proposed_by": grant.proposed_by,
        "approved_by": grant.approved_by,
        "created_at": as_utc(grant.created_at),
        "updated_at": as_utc(grant.updated_at),
    }


@dataclass
class Loaded:
    """A recipient row with its host and grant rows."""

    recipient: Recipient
    hosts: list[RecipientHost]
    grants: list[Grant]

    @property
    def is_live(self) -> bool:
        return is_live(self.recipient)

    def has_pending_change(self) -> bool:
        return changes.has_pending_change(self.recipient, self.hosts, self.grants)

    def live_state(self) -> dict[str, Any] | None:
        return changes.live_state(self.recipient, self.hosts, self.grants)

    def proposed_state(self) -> dict[str, Any]:
        return changes.proposed_state(self.recipient, self.hosts, self.grants)

    def pending_view(self) -> dict[str, Any] | None:
        """The pending change: what approving makes live, and its diff against live."""
        if not self.has_pending_change():
            return None
        proposed = self.proposed_state()
        return {
            "kind": "update" if self.is_live else "proposal",
            "proposed": changes.registry_entry(proposed),
            "proposed_grant_ids": [g["id"] for g in proposed["grants"]],
            "diff": changes.diff_states(self.live_state(), proposed),
        }

    def view(self) -> dict[str, Any]:
        """The recipient as the API shows it: the live version, and any pending change."""
        recipient = self.recipient
        live = self.is_live
        hosts = [h.pattern for h in self.hosts if not (live and h.change == "add")]
        grants = [g for g in self.grants if not (live and g.status == "proposed")]
        return {
            "id": recipient.id,
            "name": recipient.name,
            "kind": recipient.kind,
            "status": recipient.status,
            "regions": list(recipient.regions),
            "hosts": sorted(hosts),
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
            "pending_change": self.pending_view(),
        }

    def all_rows(self) -> list[Any]:
        return [self.recipient, *self.hosts, *self.grants]

    def image(self) -> dict[str, Any]:
        """The JSON image stored in audit events."""
        return _jsonable(self.view())


async def change_view(session: AsyncSession, loaded: Loaded) -> dict[str, Any] | None:
    """A pending change as `GET /v1/changes` lists it: proposed, diff, authors, version."""
    pending = loaded.pending_view()
    if pending is None:
        return None
    recipient = loaded.recipient
    authored = await authored_since_approval(session, scope_of(recipient.id))
    return {
        "entity_type": "recipient",
        "entity_id": recipient.id,
        "version": recipient.version,
        "status": recipient.status,
        "live": loaded.live_state(),
        **pending,
        "authors": authors_of(authored),
        "updated_by": recipient.updated_by,
        "updated_at": as_utc(recipient.updated_at),
    }


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


def _check_version(loaded: Loaded, expected_version: IfMatch | None) -> None:
    check_version(expected_version, loaded.recipient.version, f"recipient {loaded.recipient.id}")


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
    recipient = schema.Recipient.from_data(values)
    check_storable(recipient)
    return recipient


def _validated_grant(values: dict[str, Any]) -> schema.Grant:
    return schema.Grant.from_data(values)


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
        actor,
        "recipient.create",
        "recipient",
        body.id,
        scope=scope_of(body.id),
        after=loaded.image(),
    )
    await _bump(session)
    return loaded


def _grant_image(recipient_id: str, grant: Grant) -> dict[str, Any]:
    """A grant as the audit trail records it: its fields, its pending values, its recipient."""
    image = {"recipient_id": recipient_id, **_jsonable(grant_view(grant))}
    if grant.pending:
        image["pending"] = dict(grant.pending)
    return image


def _audit_grant(
    session: AsyncSession,
    actor: Actor,
    verb: str,
    recipient_id: str,
    grant_id: int | None,
    *,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    note: str | None = None,
) -> None:
    """Record one `grant.<verb>` audit event in the change's transaction."""
    record_audit(
        session,
        actor,
        f"grant.{verb}",
        "grant",
        str(grant_id),
        scope=scope_of(recipient_id),
        before=before,
        after=after,
        note=note,
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


def _editable_values(merged: schema.Recipient) -> dict[str, Any]:
    return {
        "name": merged.name,
        "kind": merged.kind,
        "regions": list(merged.regions),
        "tls_origination": merged.tls_origination,
        "inspect_tls": merged.inspect_tls,
        "owner_team": merged.owner_team,
        "contract_ref": merged.contract_ref,
        "notes": merged.notes,
    }


async def stage_recipient(
    session: AsyncSession, loaded: Loaded, values: dict[str, Any], hosts: set[str]
) -> bool:
    """Make `values` and `hosts` the recipient's proposed state; True when anything changed.

    A live recipient gets them as a pending change (its live columns and hosts untouched); a
    recipient that is not live is edited in place (a revoked one is proposed again).
    """
    recipient = loaded.recipient
    proposed = loaded.proposed_state()
    changed = {k for k, v in values.items() if proposed[k] != v}
    hosts_changed = set(proposed["hosts"]) != hosts
    if not changed and not hosts_changed:
        return False
    if loaded.is_live:
        live = {name: getattr(recipient, name) for name in EDITABLE_FIELDS}
        live["regions"] = list(live["regions"])
        pending = {k: v for k, v in values.items() if live[k] != v}
        recipient.pending = pending or None
        if hosts_changed:
            await _stage_hosts(session, loaded, hosts)
    else:
        for key, value in values.items():
            setattr(recipient, key, value)
        if hosts_changed:
            await _replace_hosts(session, loaded, hosts)
        if recipient.status == "revoked":
            recipient.status = "proposed"
    return True


async def update_recipient(
    session: AsyncSession,
    recipient_id: str,
    patch: RecipientPatch,
    actor: Actor,
    *,
    expected_version: IfMatch | None = None,
) -> Loaded:
    """Edit a recipient's fields and hosts: staged as a pending change when it is live."""
    loaded = await load_recipient(session, recipient_id, for_update=True)
    _check_version(loaded, expected_version)
    recipient = loaded.recipient
    before = loaded.image()
    proposed = loaded.proposed_state()
    current = {name: proposed[name] for name in EDITABLE_FIELDS}
    changes_asked = patch.model_dump(exclude_unset=True)
    merged = _validated_recipient(
        {"id": recipient.id, **current, "hosts": proposed["hosts"], **changes_asked}
    )
    was_live = loaded.is_live
    if not await stage_recipient(session, loaded, _editable_values(merged), set(merged.hosts)):
        return loaded
    _touch(recipient, actor)
    session.add(recipient)
    await session.flush()
    record_audit(
        session,
        actor,
        "recipient.update",
        "recipient",
        recipient.id,
        scope=scope_of(recipient.id),
        before=before,
        after=loaded.image(),
    )
    if not was_live:  # a live recipient's snapshot entry is unchanged until approval
        await _bump(session)
    return loaded


async def _stage_hosts(session: AsyncSession, loaded: Loaded, wanted: set[str]) -> None:
    """Mark live hosts `remove`/kept and add `add` rows so the proposed hosts are `wanted`."""
    live = {h.pattern: h for h in loaded.hosts if h.change != "add"}
    staged = {h.pattern: h for h in loaded.hosts if h.change == "add"}
    for pattern, host in live.items():
        host.change = None if pattern in wanted else "remove"
        session.add(host)
    dropped = [h for p, h in staged.items() if p not in wanted]
    if dropped:
        await session.exec(
            sa.delete(RecipientHost).where(RecipientHost.id.in_([h.id for h in dropped]))
        )
        forget(session, dropped)
    new = sorted(wanted - live.keys() - staged.keys())
    await _check_hosts_free(session, loaded.recipient.id, new)
    added = [RecipientHost(recipient_id=loaded.recipient.id, pattern=p, change="add") for p in new]
    session.add_all(added)
    await session.flush()
    loaded.hosts = [h for h in loaded.hosts if h not in dropped] + added


async def _replace_hosts(session: AsyncSession, loaded: Loaded, patterns: set[str]) -> None:
    await _check_hosts_free(
        session, loaded.recipient.id, patterns - {h.pattern for h in loaded.hosts}
    )
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
    session: AsyncSession,
    recipient_id: str,
    actor: Actor,
    *,
    expected_version: IfMatch | None = None,
) -> None:
    """Delete a recipient with its hosts and grants (the audit event keeps the last image)."""
    loaded = await load_recipient(session, recipient_id, for_update=True)
    _check_version(loaded, expected_version)
    before = loaded.image()
    await session.exec(sa.delete(Recipient).where(Recipient.id == recipient_id))
    forget(session, loaded.all_rows())
    record_audit(
        session,
        actor,
        "recipient.delete",
        "recipient",
        recipient_id,
        scope=scope_of(recipient_id),
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
    expected_version: IfMatch | None = None,
) -> tuple[Loaded, Grant]:
    """Propose a grant on a recipient (always `proposed`: a pending addition when live)."""
    loaded = await load_recipient(session, recipient_id, for_update=True)
    _check_version(loaded, expected_version)
    grant = new_grant_row(recipient_id, body, actor, "proposed")
    session.add(grant)
    _touch(loaded.recipient, actor)
    session.add(loaded.recipient)
    await session.flush()
    loaded.grants.append(grant)
    _audit_grant(
        session, actor, "create", recipient_id, grant.id, after=_grant_image(recipient_id, grant)
    )
    # A proposed grant is not in the snapshot; nothing for the proxies to fetch.
    return loaded, grant


async def update_grant(
    session: AsyncSession,
    recipient_id: str,
    grant_id: int,
    patch: GrantPatch,
    actor: Actor,
    *,
    expected_version: IfMatch | None = None,
) -> tuple[Loaded, Grant]:
    """Edit a grant: staged as a pending change on a live recipient's approved grant."""
    loaded = await load_recipient(session, recipient_id, for_update=True)
    _check_version(loaded, expected_version)
    grant = _find_grant(loaded, grant_id)
    before = _grant_image(recipient_id, grant)
    staged = loaded.is_live and grant.status == "approved"
    # Read before the edit below turns an unstaged approved grant back into a proposal: the
    # snapshot holds it until then, so its version must move.
    was_visible = grant.status == "approved" and not staged
    current = (
        changes.proposed_grant_values(grant)
        if staged
        else {f: getattr(grant, f) for f in GRANT_FIELDS}
    )
    merged = _validated_grant({**current, **patch.model_dump(exclude_unset=True)})
    new_values = {
        "purpose": merged.purpose,
        "categories": list(merged.categories),
        "legal_basis": merged.legal_basis,
        "expires": merged.expires,
    }
    if staged:
        wanted = changes.values_json(new_values)
        if wanted == current and grant.change != "remove":
            return loaded, grant
        if wanted == changes.grant_values(grant):
            grant.change, grant.pending = None, None
        else:
            grant.change, grant.pending = "update", wanted
    else:
        if all(getattr(grant, k) == v for k, v in new_values.items()):
            return loaded, grant
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
        session,
        actor,
        "update",
        recipient_id,
        grant.id,
        before=before,
        after=_grant_image(recipient_id, grant),
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
    expected_version: IfMatch | None = None,
) -> tuple[Loaded, bool]:
    """Delete a grant; on a live recipient an approved grant's removal is staged (True)."""
    loaded = await load_recipient(session, recipient_id, for_update=True)
    _check_version(loaded, expected_version)
    grant = _find_grant(loaded, grant_id)
    before = _grant_image(recipient_id, grant)
    staged = loaded.is_live and grant.status == "approved"
    if staged:
        grant.change, grant.pending = "remove", None
        grant.updated_at = utcnow()
        session.add(grant)
    else:
        await session.exec(sa.delete(Grant).where(Grant.id == grant_id))
        forget(session, [grant])
        loaded.grants = [g for g in loaded.grants if g.id != grant_id]
    _touch(loaded.recipient, actor)
    session.add(loaded.recipient)
    await session.flush()
    _audit_grant(
        session,
        actor,
        "delete",
        recipient_id,
        grant_id,
        before=before,
        after=_grant_image(recipient_id, grant) if staged else None,
    )
    if grant.status == "approved" and not staged:
        await _bump(session)
    return loaded, staged


async def revoke_grant(
    session: AsyncSession,
    recipient_id: str,
    grant_id: int,
    actor: Actor,
    note: str | None = None,
    *,
    expected_version: IfMatch | None = None,
) -> Loaded:
    """Revoke one grant at once (a reviewer's action: it only narrows what is shared)."""
    loaded = await load_recipient(session, recipient_id, for_update=True)
    _check_version(loaded, expected_version)
    grant = _find_grant(loaded, grant_id)
    if grant.status == "revoked":
        return loaded
    before = _grant_image(recipient_id, grant)
    was_visible = grant.status == "approved"
    grant.status = "revoked"
    grant.change, grant.pending = None, None
    grant.updated_at = utcnow()
    session.add(grant)
    loaded.recipient.version += 1
    session.add(loaded.recipient)
    session.add(_approval("grant", str(grant.id), "revoke", actor, note))
    await session.flush()
    _audit_grant(
        session,
        actor,
        "revoke",
        recipient_id,
        grant.id,
        before=before,
        after=_grant_image(recipient_id, grant),
        note=note,
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


async def _fold_pending(session: AsyncSession, loaded: Loaded, actor: Actor | None) -> None:
    """Make the staged change the recipient's content (approval, or revocation)."""
    recipient = loaded.recipient
    for key, value in (recipient.pending or {}).items():
        setattr(recipient, key, value)
    recipient.pending = None
    gone_hosts = [h for h in loaded.hosts if h.change == "remove"]
    if gone_hosts:
        await session.exec(
            sa.delete(RecipientHost).where(RecipientHost.id.in_([h.id for h in gone_hosts]))
        )
        forget(session, gone_hosts)
    loaded.hosts = [h for h in loaded.hosts if h.change != "remove"]
    for host in loaded.hosts:
        if host.change:
            host.change = None
            session.add(host)
    gone_grants = [g for g in loaded.grants if g.change == "remove"]
    if gone_grants:
        await session.exec(sa.delete(Grant).where(Grant.id.in_([g.id for g in gone_grants])))
        forget(session, gone_grants)
    loaded.grants = [g for g in loaded.grants if g.change != "remove"]
    now = utcnow()
    for grant in loaded.grants:
        touched = bool(grant.change)
        if grant.change == "update" and grant.pending:
            values = _validated_grant(grant.pending)
            grant.purpose = values.purpose
            grant.categories = list(values.categories)
            grant.legal_basis = values.legal_basis
            grant.expires = values.expires
        grant.change, grant.pending = None, None
        if actor is not None and (touched or grant.status == "proposed"):
            if grant.status == "proposed":
                grant.status = "approved"
            grant.approved_by = actor.name
            touched = True
        if touched:
            grant.updated_at = now
            session.add(grant)


async def approve_recipient(
    session: AsyncSession,
    recipient_id: str,
    actor: Actor,
    note: str | None = None,
    *,
    expected_version: IfMatch | None = None,
) -> Loaded:
    """Approve a recipient's pending change (a proposal, an edit, a reinstatement).

    The reviewer names the version they looked at (428 without, 412 when stale) and must not
    have authored any part of it since the last approval (403 `four-eyes`).
    """
    loaded = await load_recipient(session, recipient_id, for_update=True)
    _check_version(loaded, require_version(expected_version, f"recipient {recipient_id}"))
    recipient = loaded.recipient
    if recipient.status == "revoked":
        raise conflict(f"recipient {recipient_id} is revoked; edit it to propose it again")
    if recipient.status == "approved" and not loaded.has_pending_change():
        raise conflict(f"recipient {recipient_id} has nothing awaiting approval")
    await check_four_eyes(session, scope_of(recipient_id), actor.name, f"recipient {recipient_id}")
    before = loaded.image()
    await _fold_pending(session, loaded, actor)
    recipient.status = "approved"
    recipient.version += 1
    # Reviewing is not editing: updated_by stays the author.
    session.add(recipient)
    session.add(_approval("recipient", recipient_id, "approve", actor, note))
    await session.flush()
    record_audit(
        session,
        actor,
        "recipient.approve",
        "recipient",
        recipient_id,
        scope=scope_of(recipient_id),
        before=before,
        after=loaded.image(),
        note=note,
    )
    await _bump(session)
    return loaded


async def reject_recipient(
    session: AsyncSession,
    recipient_id: str,
    actor: Actor,
    note: str | None = None,
    *,
    expected_version: IfMatch | None = None,
) -> Loaded:
    """Reject a pending change: a live recipient's staged edit is discarded (live stays);
    a proposal becomes `revoked` (an edit proposes it again). The note is kept."""
    loaded = await load_recipient(session, recipient_id, for_update=True)
    _check_version(loaded, expected_version)
    recipient = loaded.recipient
    if not loaded.has_pending_change():
        raise conflict(f"recipient {recipient_id} has nothing awaiting approval")
    before = loaded.image()
    if loaded.is_live:
        recipient.pending = None
        staged_hosts = [h for h in loaded.hosts if h.change == "add"]
        if staged_hosts:
            await session.exec(
                sa.delete(RecipientHost).where(RecipientHost.id.in_([h.id for h in staged_hosts]))
            )
            forget(session, staged_hosts)
        loaded.hosts = [h for h in loaded.hosts if h.change != "add"]
        for host in loaded.hosts:
            if host.change:
                host.change = None
                session.add(host)
        staged_grants = [g for g in loaded.grants if g.status == "proposed"]
        if staged_grants:
            await session.exec(sa.delete(Grant).where(Grant.id.in_([g.id for g in staged_grants])))
            forget(session, staged_grants)
        loaded.grants = [g for g in loaded.grants if g.status != "proposed"]
        for grant in loaded.grants:
            if grant.change:
                grant.change, grant.pending = None, None
                session.add(grant)
    else:
        recipient.status = "revoked"
        await _bump(session)
    recipient.version += 1
    session.add(recipient)
    session.add(_approval("recipient", recipient_id, "reject", actor, note))
    await session.flush()
    record_audit(
        session,
        actor,
        "recipient.reject",
        "recipient",
        recipient_id,
        scope=scope_of(recipient_id),
        before=before,
        after=loaded.image(),
        note=note,
    )
    return loaded


async def set_recipient_status(
    session: AsyncSession,
    recipient_id: str,
    action: str,
    actor: Actor,
    note: str | None = None,
    *,
    expected_version: IfMatch | None = None,
) -> Loaded:
    """Suspend (approved → suspended) or revoke (any → revoked) a recipient, at once.

    A revoked recipient is no longer live, so a staged change becomes its (unapproved)
    content: an edit proposes it again, and four eyes still count that change's authors.
    """
    target = {"suspend": "suspended", "revoke": "revoked"}[action]
    loaded = await load_recipient(session, recipient_id, for_update=True)
    _check_version(loaded, expected_version)
    recipient = loaded.recipient
    if action == "suspend" and recipient.status != "approved":
        raise conflict(f"only an approved recipient can be suspended (it is {recipient.status})")
    if recipient.status == target:
        return loaded
    before = loaded.image()
    if target == "revoked" and loaded.is_live:
        await _fold_pending(session, loaded, None)
    recipient.status = target
    recipient.version += 1
    session.add(recipient)
    session.add(_approval("recipient", recipient_id, action, actor, note))
    await session.flush()
    record_audit(
        session,
        actor,
        f"recipient.{action}",
        "recipient",
        recipient_id,
        scope=scope_of(recipient_id),
        before=before,
        after=loaded.image(),
        note=note,
    )
    await _bump(session)
    return loaded


async def list_reviews(session: AsyncSession, recipient_id: str) -> list[dict[str, Any]]:
    """A recipient's review decisions (approve, reject, suspend, revoke) with their notes."""
    rows = (
        await session.exec(
            select(Approval)
            .where(Approval.entity_type == "recipient", Approval.entity_id == recipient_id)
            .order_by(Approval.id)
        )
    ).all()
    return [
        {"action": a.action, "actor": a.actor, "time": as_utc(a.time), "note": a.note} for a in rows
    ]


async def list_pending_changes(session: AsyncSession) -> list[dict[str, Any]]:
    """Every recipient with a pending change (proposal or staged edit), with its diff."""
    # JSON columns store None as JSON null, so `recipient.pending` is tested here, not in SQL.
    staged = set(
        (
            await session.exec(
                select(RecipientHost.recipient_id).where(RecipientHost.change.is_not(None))
            )
        ).all()
    )
    staged |= set(
        (
            await session.exec(
                select(Grant.recipient_id).where(
                    sa.or_(Grant.change.is_not(None), Grant.status == "proposed")
                )
            )
        ).all()
    )
    rows = (
        await session.exec(
            select(Recipient.id, Recipient.status, Recipient.pending).order_by(Recipient.id)
        )
    ).all()
    ids = [
        rid
        for rid, status, pending in rows
        if status == "proposed" or (status in changes.LIVE_STATUSES and (pending or rid in staged))
    ]
    out = []
    for rid in ids:
        view = await change_view(session, await load_recipient(session, rid))
        if view is not None:
            out.append(view)
    return out


def grants_by_purpose(grants: Sequence[Grant]) -> dict[str, list[Grant]]:
    """Group grant rows by purpose, oldest first."""
    out: dict[str, list[Grant]] = {}
    for grant in sorted(grants, key=lambda g: g.id or 0):
        out.setdefault(grant.purpose, []).append(grant)
    return out
