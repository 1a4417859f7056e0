"""`registry apply`: make the registry match a registry file, as one audited transaction.

The file is the reviewed source of truth (registry as code): statuses are applied as written,
so the Git review is the second pair of eyes. That is why applying anything that leaves a
touched recipient in a status other than `proposed` needs the `security` or `admin` role;
an `engineer` may apply files whose added or changed recipients are all `proposed` (and
remove recipients, as the API lets them). Grants in the file carry no status: they are
`approved` when their recipient is not `proposed`, else `proposed`.

Grants are matched by purpose (the n-th grant of a purpose in the file to the n-th oldest
of that purpose in the database), so applying the same file twice changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from registry.audit import record_audit
from registry.errors import ApiError, forbidden
from registry.models import Approval, Grant, Recipient, RecipientHost, utcnow
from registry.service import (
    RECIPIENT_FIELDS,
    Actor,
    Loaded,
    check_storable,
    forget,
    grants_by_purpose,
    new_grant_row,
    new_recipient_row,
)
from registry.state import bump_snapshot_version
from sharewall import snapshot as schema

REVIEWER_ROLES = frozenset({"security", "admin"})


def _grant_status(recipient_status: str) -> str:
    return "proposed" if recipient_status == "proposed" else "approved"


def _grant_doc(grant: schema.Grant | Grant, status: str | None = None) -> dict[str, Any]:
    doc = {
        "purpose": grant.purpose,
        "categories": list(grant.categories),
        "legal_basis": grant.legal_basis,
        "expires": grant.expires.isoformat() if grant.expires else None,
    }
    doc["status"] = status if status is not None else getattr(grant, "status", None)
    return doc


def _grant_differences(row: Grant, wanted: schema.Grant, status: str) -> dict[str, list[Any]]:
    diffs: dict[str, list[Any]] = {}
    if set(row.categories) != set(wanted.categories):
        diffs["categories"] = [sorted(row.categories), sorted(wanted.categories)]
    if row.legal_basis != wanted.legal_basis:
        diffs["legal_basis"] = [row.legal_basis, wanted.legal_basis]
    if row.expires != wanted.expires:
        diffs["expires"] = [
            row.expires.isoformat() if row.expires else None,
            wanted.expires.isoformat() if wanted.expires else None,
        ]
    if row.status != status:
        diffs["status"] = [row.status, status]
    return diffs


@dataclass
class RecipientChange:
    """How one existing recipient differs from the file."""

    id: str
    fields: dict[str, list[Any]] = field(default_factory=dict)
    hosts_added: list[str] = field(default_factory=list)
    hosts_removed: list[str] = field(default_factory=list)
    grants_added: list[dict[str, Any]] = field(default_factory=list)
    grants_removed: list[dict[str, Any]] = field(default_factory=list)
    grants_changed: list[dict[str, Any]] = field(default_factory=list)

    def is_empty(self) -> bool:
        return not (
            self.fields
            or self.hosts_added
            or self.hosts_removed
            or self.grants_added
            or self.grants_removed
            or self.grants_changed
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "fields": self.fields,
            "hosts": {"added": self.hosts_added, "removed": self.hosts_removed},
            "grants": {
                "added": self.grants_added,
                "removed": self.grants_removed,
                "changed": self.grants_changed,
            },
        }


@dataclass
class ApplyDiff:
    """Recipients to add, change and remove so that the registry matches the file."""

    added: list[dict[str, Any]] = field(default_factory=list)
    changed: list[RecipientChange] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    applied: bool = False
    version: int | None = None

    def is_empty(self) -> bool:
        return not (self.added or self.changed or self.removed)

    def to_json(self) -> dict[str, Any]:
        """The diff as `POST /v1/apply` answers it."""
        return {
            "changed": not self.is_empty(),
            "applied": self.applied,
            "version": self.version,
            "recipients": {
                "added": self.added,
                "changed": [c.to_json() for c in self.changed],
                "removed": self.removed,
            },
        }


def render_diff(doc: dict[str, Any]) -> list[str]:
    """Human-readable lines of a diff document (`ApplyDiff.to_json()`), for the CLI."""
    recipients = doc["recipients"]
    if not doc["changed"]:
        return ["no changes"]
    lines: list[str] = []
    for r in recipients["added"]:
        lines.append(f"+ recipient {r['id']} ({r['kind']}, {r['status']})")
        lines += [f"    + host {h}" for h in r["hosts"]]
        lines += [f"    + grant {_grant_line(g)}" for g in r["grants"]]
    for c in recipients["changed"]:
        lines.append(f"~ recipient {c['id']}")
        lines += [f"    {k}: {old!r} -> {new!r}" for k, (old, new) in c["fields"].items()]
        lines += [f"    + host {h}" for h in c["hosts"]["added"]]
        lines += [f"    - host {h}" for h in c["hosts"]["removed"]]
        lines += [f"    + grant {_grant_line(g)}" for g in c["grants"]["added"]]
        lines += [f"    - grant {_grant_line(g)}" for g in c["grants"]["removed"]]
        for g in c["grants"]["changed"]:
            what = ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in g["fields"].items())
            lines.append(f"    ~ grant {g['purpose']}: {what}")
    lines += [f"- recipient {rid}" for rid in recipients["removed"]]
    lines.append(
        f"{len(recipients['added'])} added, {len(recipients['changed'])} changed, "
        f"{len(recipients['removed'])} removed" + ("" if doc["applied"] else " (not applied)")
    )
    return lines


def _grant_line(g: dict[str, Any]) -> str:
    extra = f" until {g['expires']}" if g.get("expires") else ""
    return f"{g['purpose']} [{', '.join(g['categories'])}] ({g['status']}){extra}"


# --------------------------------------------------------------------------- diff


async def _load_all(session: AsyncSession) -> dict[str, Loaded]:
    recipients = {r.id: r for r in (await session.exec(select(Recipient))).all()}
    hosts: dict[str, list[RecipientHost]] = {rid: [] for rid in recipients}
    grants: dict[str, list[Grant]] = {rid: [] for rid in recipients}
    for h in (await session.exec(select(RecipientHost))).all():
        hosts[h.recipient_id].append(h)
    for g in (await session.exec(select(Grant).order_by(Grant.id))).all():
        grants[g.recipient_id].append(g)
    return {rid: Loaded(r, hosts[rid], grants[rid]) for rid, r in recipients.items()}


def _check_file_hosts(wanted: schema.Snapshot) -> None:
    owner: dict[str, str] = {}
    for r in wanted.recipients:
        for h in r.hosts:
            if h in owner:
                raise ApiError(
                    422,
                    "validation-error",
                    "Registry file is not valid",
                    f"recipient {r.id!r}: hosts: {h} is also listed by {owner[h]!r}",
                    {"errors": [{"field": f"recipients.{r.id}.hosts", "message": "duplicate"}]},
                )
            owner[h] = r.id


def _pair_grants(
    rows: list[Grant], wanted: tuple[schema.Grant, ...]
) -> tuple[list[tuple[Grant, schema.Grant]], list[schema.Grant], list[Grant]]:
    """Match file grants to rows by purpose: (pairs, only in file, only in database)."""
    by_purpose = grants_by_purpose(rows)
    pairs: list[tuple[Grant, schema.Grant]] = []
    added: list[schema.Grant] = []
    for g in wanted:
        bucket = by_purpose.get(g.purpose)
        if bucket:
            pairs.append((bucket.pop(0), g))
        else:
            added.append(g)
    removed = [row for bucket in by_purpose.values() for row in bucket]
    return pairs, added, removed


def _recipient_doc(r: schema.Recipient) -> dict[str, Any]:
    status = _grant_status(r.status)
    return {
        "id": r.id,
        "name": r.name,
        "kind": r.kind,
        "status": r.status,
        "hosts": list(r.hosts),
        "grants": [_grant_doc(g, status) for g in r.grants],
    }


def compute_diff(current: dict[str, Loaded], wanted: schema.Snapshot) -> ApplyDiff:
    """What must change so that the database (`current`) matches the file (`wanted`)."""
    diff = ApplyDiff()
    wanted_ids = {r.id for r in wanted.recipients}
    for r in wanted.recipients:
        loaded = current.get(r.id)
        if loaded is None:
            diff.added.append(_recipient_doc(r))
            continue
        change = RecipientChange(id=r.id)
        row = loaded.recipient
        for name in RECIPIENT_FIELDS:
            old, new = getattr(row, name), getattr(r, name)
            if name == "regions":
                old, new = list(old), list(new)
            if old != new:
                change.fields[name] = [old, new]
        have = {h.pattern for h in loaded.hosts}
        change.hosts_added = sorted(set(r.hosts) - have)
        change.hosts_removed = sorted(have - set(r.hosts))
        status = _grant_status(r.status)
        pairs, added, removed = _pair_grants(loaded.grants, r.grants)
        change.grants_added = [_grant_doc(g, status) for g in added]
        change.grants_removed = [_grant_doc(g) for g in removed]
        for grant_row, g in pairs:
            differences = _grant_differences(grant_row, g, status)
            if differences:
                change.grants_changed.append(
                    {"id": grant_row.id, "purpose": g.purpose, "fields": differences}
                )
        if not change.is_empty():
            diff.changed.append(change)
    diff.removed = sorted(set(current) - wanted_ids)
    return diff


def _needs_reviewer(diff: ApplyDiff, wanted: schema.Snapshot) -> bool:
    touched = {r["id"] for r in diff.added} | {c.id for c in diff.changed}
    return any(r.status != "proposed" for r in wanted.recipients if r.id in touched)


# --------------------------------------------------------------------------- apply


async def apply_registry(
    session: AsyncSession, wanted: schema.Snapshot, actor: Actor, *, dry_run: bool = False
) -> ApplyDiff:
    """Diff the registry against `wanted` and, unless `dry_run`, apply it (caller commits)."""
    _check_file_hosts(wanted)
    for r in wanted.recipients:
        check_storable(r, where=f"recipients.{r.id}.")
    current = await _load_all(session)
    diff = compute_diff(current, wanted)
    if _needs_reviewer(diff, wanted) and actor.role not in REVIEWER_ROLES:
        raise forbidden(
            "the file sets recipients to a status other than proposed; "
            "applying it needs the security or admin role",
            type_slug="apply-needs-reviewer",
        )
    if dry_run or diff.is_empty():
        return diff
    by_id = {r.id: r for r in wanted.recipients}
    # Deletions first, as statements executed now, so hosts can move between recipients.
    for rid in diff.removed:
        record_audit(
            session,
            actor=actor.name,
            action="recipient.delete",
            entity_type="recipient",
            entity_id=rid,
            before=current[rid].image(),
        )
        await session.exec(sa.delete(Recipient).where(Recipient.id == rid))
        forget(session, current[rid].all_rows())
    for change in diff.changed:
        await _remove_parts(session, current[change.id], by_id[change.id], change)
    await session.flush()
    for change in diff.changed:
        await _update_recipient(session, current[change.id], by_id[change.id], change, actor)
    await _add_recipients(session, [by_id[doc["id"]] for doc in diff.added], actor)
    diff.version = await bump_snapshot_version(session)
    diff.applied = True
    record_audit(
        session,
        actor=actor.name,
        action="registry.apply",
        entity_type="registry",
        entity_id="registry",
        after={
            "added": [d["id"] for d in diff.added],
            "changed": [c.id for c in diff.changed],
            "removed": diff.removed,
        },
    )
    return diff


async def _remove_parts(
    session: AsyncSession, loaded: Loaded, wanted: schema.Recipient, change: RecipientChange
) -> None:
    gone_hosts = set(change.hosts_removed)
    drop_hosts = [h.id for h in loaded.hosts if h.pattern in gone_hosts]
    if drop_hosts:
        await session.exec(sa.delete(RecipientHost).where(RecipientHost.id.in_(drop_hosts)))
        forget(session, [h for h in loaded.hosts if h.pattern in gone_hosts])
    loaded.hosts = [h for h in loaded.hosts if h.pattern not in gone_hosts]
    _, _, removed = _pair_grants(loaded.grants, wanted.grants)
    if removed:
        await session.exec(sa.delete(Grant).where(Grant.id.in_([g.id for g in removed])))
        forget(session, removed)


async def _update_recipient(
    session: AsyncSession,
    loaded: Loaded,
    wanted: schema.Recipient,
    change: RecipientChange,
    actor: Actor,
) -> None:
    before = loaded.image()
    row = loaded.recipient
    now = utcnow()
    for name, (_, new) in change.fields.items():
        setattr(row, name, list(new) if name == "regions" else new)
    if "status" in change.fields and row.status != "proposed":
        session.add(_approval(row.id, row.status, actor))
    row.updated_by = actor.name
    row.updated_at = now
    row.version += 1
    session.add(row)
    added_hosts = [RecipientHost(recipient_id=row.id, pattern=p) for p in change.hosts_added]
    session.add_all(added_hosts)
    status = _grant_status(wanted.status)
    pairs, added, _ = _pair_grants(loaded.grants, wanted.grants)
    kept: list[Grant] = []
    for grant_row, g in pairs:
        if _grant_differences(grant_row, g, status):
            grant_row.categories = list(g.categories)
            grant_row.legal_basis = g.legal_basis
            grant_row.expires = g.expires
            if grant_row.status != status:
                grant_row.status = status
            grant_row.approved_by = actor.name if status == "approved" else None
            grant_row.updated_at = now
            session.add(grant_row)
        kept.append(grant_row)
    new_grants = [new_grant_row(row.id, g, actor, status) for g in added]
    session.add_all(new_grants)
    await session.flush()
    loaded.hosts = loaded.hosts + added_hosts
    loaded.grants = kept + new_grants
    record_audit(
        session,
        actor=actor.name,
        action="recipient.update",
        entity_type="recipient",
        entity_id=row.id,
        before=before,
        after=loaded.image(),
    )


async def _add_recipients(
    session: AsyncSession, wanted: list[schema.Recipient], actor: Actor
) -> None:
    """Insert new recipients in bulk: one flush per table, not per recipient (10,000 rows)."""
    if not wanted:
        return
    now = utcnow()
    rows = [new_recipient_row(w, actor, status=w.status, now=now) for w in wanted]
    session.add_all(rows)
    await session.flush()
    hosts = {w.id: [RecipientHost(recipient_id=w.id, pattern=p) for p in w.hosts] for w in wanted}
    grants = {
        w.id: [new_grant_row(w.id, g, actor, _grant_status(w.status)) for g in w.grants]
        for w in wanted
    }
    session.add_all([h for hs in hosts.values() for h in hs])
    session.add_all([g for gs in grants.values() for g in gs])
    session.add_all([_approval(w.id, w.status, actor) for w in wanted if w.status != "proposed"])
    await session.flush()  # grant ids, for the audit images
    for row in rows:
        record_audit(
            session,
            actor=actor.name,
            action="recipient.create",
            entity_type="recipient",
            entity_id=row.id,
            after=Loaded(row, hosts[row.id], grants[row.id]).image(),
        )


def _approval(recipient_id: str, status: str, actor: Actor) -> Approval:
    action = {"approved": "approve", "suspended": "suspend", "revoked": "revoke"}[status]
    return Approval(
        entity_type="recipient",
        entity_id=recipient_id,
        action=action,
        actor=actor.name,
        time=utcnow(),
        note="registry apply",
    )
