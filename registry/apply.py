"""`registry apply`: make the registry match a registry file, as one audited transaction.

The file is reviewed in Git; a reviewer's approval in the registry is the second pair of eyes.
So applying a file never approves anything by itself:

- a recipient the file adds (or one not live: proposed, revoked) gets the file's content as a
  proposal (status `proposed`);
- a change to a live recipient (approved or suspended) is staged as its pending change (it
  replaces any earlier one), while the approved version stays in force for the proxies;
- `status: suspended` or `revoked` in the file narrows a live recipient at once (a reviewer's
  action: applying it needs the `security` or `admin` role); recipients absent from the file
  are deleted.

The one exception is the operator's bootstrap, `registry apply --db` (direct database access,
which can write anything anyway): there a recipient that is not live yet and is
`status: approved` in the file is written approved, audited as created and approved by
`cli:<user>`; changes to live recipients are staged for approval exactly as through the API.

Grants are matched by purpose (the n-th grant of a purpose in the file to the n-th of that
purpose in the recipient's proposed state), and the file is compared with the proposed state
(live plus pending), so applying the same file twice changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from registry import changes, workloads
from registry.audit import Actor, record_audit
from registry.changes import EDITABLE_FIELDS
from registry.errors import ApiError, conflict, forbidden
from registry.models import Approval, Grant, Recipient, RecipientHost, Workload, utcnow
from registry.service import (
    Loaded,
    check_storable,
    forget,
    new_grant_row,
    new_recipient_row,
    scope_of,
    set_recipient_status,
    stage_recipient,
)
from registry.state import bump_snapshot_version
from sharewall import snapshot as schema

REVIEWER_ROLES = frozenset({"security", "admin"})
NARROWING_STATUSES = frozenset({"suspended", "revoked"})


def _grant_doc(values: dict[str, Any], status: str) -> dict[str, Any]:
    return {
        "purpose": values["purpose"],
        "categories": list(values["categories"]),
        "legal_basis": values.get("legal_basis"),
        "expires": values.get("expires"),
        "status": status,
    }


def _file_grant(g: schema.Grant) -> dict[str, Any]:
    return changes.values_json(g.to_data())


def _grant_differences(have: dict[str, Any], wanted: dict[str, Any]) -> dict[str, list[Any]]:
    diffs: dict[str, list[Any]] = {}
    if set(have["categories"]) != set(wanted["categories"]):
        diffs["categories"] = [sorted(have["categories"]), sorted(wanted["categories"])]
    for name in ("legal_basis", "expires"):
        if have.get(name) != wanted.get(name):
            diffs[name] = [have.get(name), wanted.get(name)]
    return diffs


@dataclass
class RecipientChange:
    """How one existing recipient's proposed state differs from the file."""

    id: str
    fields: dict[str, list[Any]] = field(default_factory=dict)
    hosts_added: list[str] = field(default_factory=list)
    hosts_removed: list[str] = field(default_factory=list)
    grants_added: list[dict[str, Any]] = field(default_factory=list)
    grants_removed: list[dict[str, Any]] = field(default_factory=list)
    grants_changed: list[dict[str, Any]] = field(default_factory=list)
    # The status the apply sets now (narrowing, bootstrap approval, re-proposal), if any.
    status: str | None = None
    staged: bool = False

    def has_content(self) -> bool:
        return bool(
            {k for k in self.fields if k != "status"}
            or self.hosts_added
            or self.hosts_removed
            or self.grants_added
            or self.grants_removed
            or self.grants_changed
        )

    def is_empty(self) -> bool:
        return not (self.has_content() or self.status)

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
            "pending_approval": self.staged,
        }


@dataclass
class WorkloadChange:
    """How one existing workload's proposed state differs from the file."""

    id: str
    fields: dict[str, list[Any]] = field(default_factory=dict)
    status: str | None = None
    staged: bool = False

    def has_content(self) -> bool:
        return bool({k for k in self.fields if k != "status"})

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "fields": self.fields, "pending_approval": self.staged}


@dataclass
class ApplyDiff:
    """Recipients (and workloads) to add, change and remove so the registry matches the file."""

    added: list[dict[str, Any]] = field(default_factory=list)
    changed: list[RecipientChange] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    workloads_added: list[dict[str, Any]] = field(default_factory=list)
    workloads_changed: list[WorkloadChange] = field(default_factory=list)
    # Workloads the file no longer lists: `revoked` (live ones) or `deleted`.
    workloads_removed: dict[str, str] = field(default_factory=dict)
    applied: bool = False
    version: int | None = None

    def is_empty(self) -> bool:
        return not (
            self.added
            or self.changed
            or self.removed
            or self.workloads_added
            or self.workloads_changed
            or self.workloads_removed
        )

    def awaiting_approval(self) -> list[str]:
        """Recipients (ids) and workloads (namespace/name) left awaiting a reviewer."""
        return (
            [r["id"] for r in self.added if r["status"] == "proposed"]
            + [c.id for c in self.changed if c.staged or c.status == "proposed"]
            + [
                f"{w['namespace']}/{w['name']}"
                for w in self.workloads_added
                if w["status"] == "proposed"
            ]
            + [c.id for c in self.workloads_changed if c.staged or c.status == "proposed"]
        )

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
            "workloads": {
                "added": self.workloads_added,
                "changed": [c.to_json() for c in self.workloads_changed],
                "removed": sorted(self.workloads_removed),
            },
            "awaiting_approval": self.awaiting_approval(),
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
        staged = " (pending approval)" if c.get("pending_approval") else ""
        lines.append(f"~ recipient {c['id']}{staged}")
        lines += [f"    {k}: {old!r} -> {new!r}" for k, (old, new) in c["fields"].items()]
        lines += [f"    + host {h}" for h in c["hosts"]["added"]]
        lines += [f"    - host {h}" for h in c["hosts"]["removed"]]
        lines += [f"    + grant {_grant_line(g)}" for g in c["grants"]["added"]]
        lines += [f"    - grant {_grant_line(g)}" for g in c["grants"]["removed"]]
        for g in c["grants"]["changed"]:
            what = ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in g["fields"].items())
            lines.append(f"    ~ grant {g['purpose']}: {what}")
    lines += [f"- recipient {rid}" for rid in recipients["removed"]]
    workloads = doc.get("workloads") or {"added": [], "changed": [], "removed": []}
    for w in workloads["added"]:
        what = ", ".join(w["purposes"])
        lines.append(f"+ workload {w['namespace']}/{w['name']} ({w['status']}) purposes [{what}]")
    for c in workloads["changed"]:
        staged = " (pending approval)" if c.get("pending_approval") else ""
        lines.append(f"~ workload {c['id']}{staged}")
        lines += [f"    {k}: {old!r} -> {new!r}" for k, (old, new) in c["fields"].items()]
    lines += [f"- workload {wid}" for wid in workloads["removed"]]
    lines.append(
        f"{len(recipients['added'])} added, {len(recipients['changed'])} changed, "
        f"{len(recipients['removed'])} removed" + ("" if doc["applied"] else " (not applied)")
    )
    if any(workloads.values()):
        lines.append(
            f"workloads: {len(workloads['added'])} added, {len(workloads['changed'])} changed, "
            f"{len(workloads['removed'])} removed"
        )
    waiting = doc.get("awaiting_approval") or []
    if waiting:
        lines.append(
            f"awaiting approval ({len(waiting)}): {', '.join(waiting)} "
            "(a reviewer approves each in the registry: GET /v1/changes)"
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
    have: list[dict[str, Any]], wanted: tuple[schema.Grant, ...]
) -> tuple[list[tuple[dict[str, Any], schema.Grant]], list[schema.Grant], list[dict[str, Any]]]:
    """Match file grants to proposed grants by purpose: (pairs, only in file, only in db)."""
    by_purpose: dict[str, list[dict[str, Any]]] = {}
    for g in have:
        by_purpose.setdefault(g["purpose"], []).append(g)
    pairs: list[tuple[dict[str, Any], schema.Grant]] = []
    added: list[schema.Grant] = []
    for g in wanted:
        bucket = by_purpose.get(g.purpose)
        if bucket:
            pairs.append((bucket.pop(0), g))
        else:
            added.append(g)
    removed = [g for bucket in by_purpose.values() for g in bucket]
    return pairs, added, removed


def _new_status(file_status: str, bootstrap: bool) -> str:
    """The status a recipient the file adds is created with."""
    if file_status in NARROWING_STATUSES:
        return "revoked"  # never enforced; the file keeps it on record
    return "approved" if bootstrap and file_status == "approved" else "proposed"


def _status_now(row: Recipient, file_status: str, bootstrap: bool) -> str | None:
    """The status applying the file sets at once on an existing recipient, if any."""
    if changes.is_live(row):
        if file_status == "suspended" and row.status == "approved":
            return "suspended"
        if file_status == "revoked":
            return "revoked"
        return None  # approval (or reinstatement) is a reviewer's decision in the registry
    if file_status == "approved" and bootstrap:
        return "approved"
    if file_status in ("proposed", "approved") and row.status == "revoked":
        return "proposed"
    if file_status in NARROWING_STATUSES and row.status == "proposed":
        return "revoked"
    return None


def _recipient_doc(r: schema.Recipient, status: str) -> dict[str, Any]:
    grant_status = "approved" if status == "approved" else "proposed"
    return {
        "id": r.id,
        "name": r.name,
        "kind": r.kind,
        "status": status,
        "hosts": list(r.hosts),
        "grants": [_grant_doc(_file_grant(g), grant_status) for g in r.grants],
    }


def compute_diff(
    current: dict[str, Loaded], wanted: schema.Snapshot, *, bootstrap: bool = False
) -> ApplyDiff:
    """What must change so that the registry's proposed state matches the file."""
    diff = ApplyDiff()
    wanted_ids = {r.id for r in wanted.recipients}
    for r in wanted.recipients:
        loaded = current.get(r.id)
        if loaded is None:
            diff.added.append(_recipient_doc(r, _new_status(r.status, bootstrap)))
            continue
        change = RecipientChange(id=r.id)
        proposed = loaded.proposed_state()
        for name in EDITABLE_FIELDS:
            old, new = proposed[name], getattr(r, name)
            if name == "regions":
                new = list(new)
            if old != new:
                change.fields[name] = [old, new]
        change.status = _status_now(loaded.recipient, r.status, bootstrap)
        if change.status:
            change.fields["status"] = [loaded.recipient.status, change.status]
        change.hosts_added = sorted(set(r.hosts) - set(proposed["hosts"]))
        change.hosts_removed = sorted(set(proposed["hosts"]) - set(r.hosts))
        grant_status = "approved" if change.status == "approved" else "proposed"
        pairs, added, removed = _pair_grants(proposed["grants"], r.grants)
        change.grants_added = [_grant_doc(_file_grant(g), grant_status) for g in added]
        change.grants_removed = [_grant_doc(g, "removed") for g in removed]
        for have, g in pairs:
            differences = _grant_differences(have, _file_grant(g))
            if differences:
                change.grants_changed.append(
                    {"id": have["id"], "purpose": g.purpose, "fields": differences}
                )
        change.staged = loaded.is_live and change.has_content()
        if not change.is_empty():
            diff.changed.append(change)
    diff.removed = sorted(set(current) - wanted_ids)
    return diff


def _workload_status_now(row: Workload, file_status: str, bootstrap: bool) -> str | None:
    if workloads.is_live(row):
        if file_status == "suspended" and row.status == "approved":
            return "suspended"
        return "revoked" if file_status == "revoked" else None
    if file_status == "approved" and bootstrap:
        return "approved"
    if file_status in NARROWING_STATUSES and row.status == "proposed":
        return "revoked"
    return None


def diff_workloads(
    diff: ApplyDiff,
    current: dict[tuple[str, str], Workload],
    wanted: schema.Snapshot,
    bootstrap: bool,
) -> None:
    """Add the workload part to `diff` (the file manages workloads only when it lists some)."""
    if not wanted.workloads:
        return
    for w in wanted.workloads:
        row = current.get(w.key)
        values = {
            "purposes": list(w.purposes),
            "recipients": None if w.recipients is None else list(w.recipients),
        }
        if row is None:
            diff.workloads_added.append(
                {
                    "namespace": w.namespace,
                    "name": w.name,
                    "status": _new_status(w.status, bootstrap),
                    **values,
                }
            )
            continue
        change = WorkloadChange(id=workloads.workload_id(*w.key))
        proposed = workloads.proposed_values(row)
        change.fields = {k: [proposed[k], values[k]] for k in values if proposed[k] != values[k]}
        change.status = _workload_status_now(row, w.status, bootstrap)
        if change.status:
            change.fields["status"] = [row.status, change.status]
        change.staged = workloads.is_live(row) and change.has_content()
        if change.fields:
            diff.workloads_changed.append(change)
    listed = {w.key for w in wanted.workloads}
    for key, row in sorted(current.items()):
        if key not in listed:
            wid = workloads.workload_id(*key)
            diff.workloads_removed[wid] = "revoked" if workloads.is_live(row) else "deleted"


def _needs_reviewer(diff: ApplyDiff) -> bool:
    return (
        any(c.status in NARROWING_STATUSES for c in diff.changed)
        or any(c.status in NARROWING_STATUSES for c in diff.workloads_changed)
        or "revoked" in diff.workloads_removed.values()
    )


# --------------------------------------------------------------------------- apply


async def apply_registry(
    session: AsyncSession,
    wanted: schema.Snapshot,
    actor: Actor,
    *,
    dry_run: bool = False,
    bootstrap: bool = False,
) -> ApplyDiff:
    """Diff the registry against `wanted` and, unless `dry_run`, apply it (caller commits).

    `bootstrap` (only `registry apply --db`) writes not-yet-live recipients approved when the
    file says so; otherwise nothing is approved here (see the module docstring).
    """
    _check_file_hosts(wanted)
    for r in wanted.recipients:
        check_storable(r, where=f"recipients.{r.id}.")
    current = await _load_all(session)
    diff = compute_diff(current, wanted, bootstrap=bootstrap)
    current_workloads = {(w.namespace, w.name): w for w in await workloads.list_workloads(session)}
    diff_workloads(diff, current_workloads, wanted, bootstrap)
    if _needs_reviewer(diff) and actor.role not in REVIEWER_ROLES:
        raise forbidden(
            "the file suspends or revokes a live recipient or workload; applying it needs the "
            "security or admin role",
            type_slug="apply-needs-reviewer",
        )
    if dry_run or diff.is_empty():
        return diff
    by_id = {r.id: r for r in wanted.recipients}
    # Deletions first, as statements executed now, so hosts can move between recipients.
    for rid in diff.removed:
        record_audit(
            session,
            actor,
            "recipient.delete",
            "recipient",
            rid,
            scope=scope_of(rid),
            before=current[rid].image(),
        )
        await session.exec(sa.delete(Recipient).where(Recipient.id == rid))
        forget(session, current[rid].all_rows())
    await session.flush()
    # Recipients giving hosts up first, so a host can move to another in the same apply.
    for change in sorted(diff.changed, key=lambda c: not c.hosts_removed):
        await _change_recipient(session, current[change.id], by_id[change.id], change, actor)
    await _check_new_hosts_free(session, [by_id[doc["id"]] for doc in diff.added])
    await _add_recipients(
        session,
        [(by_id[doc["id"]], doc["status"]) for doc in diff.added],
        actor,
    )
    await _apply_workloads(session, diff, current_workloads, wanted, actor)
    diff.version = await bump_snapshot_version(session)
    diff.applied = True
    record_audit(
        session,
        actor,
        "registry.apply",
        "registry",
        "registry",
        after={
            "added": [d["id"] for d in diff.added],
            "changed": [c.id for c in diff.changed],
            "removed": diff.removed,
            "workloads_added": [f"{w['namespace']}/{w['name']}" for w in diff.workloads_added],
            "workloads_changed": [c.id for c in diff.workloads_changed],
            "workloads_removed": diff.workloads_removed,
            "awaiting_approval": diff.awaiting_approval(),
            "bootstrap": bootstrap,
        },
    )
    return diff


async def _stage_grants(
    session: AsyncSession, loaded: Loaded, wanted: schema.Recipient, actor: Actor
) -> None:
    """Make the recipient's proposed grants the file's (staged on a live recipient)."""
    by_id = {g.id: g for g in loaded.grants}
    pairs, added, removed = _pair_grants(loaded.proposed_state()["grants"], wanted.grants)
    live = loaded.is_live
    now = utcnow()
    for have, g in pairs:
        row = by_id[have["id"]]
        target = _file_grant(g)
        if not _grant_differences(have, target):
            continue
        if live and row.status == "approved":
            if _grant_differences(changes.grant_values(row), target):
                row.change, row.pending = "update", target
            else:
                row.change, row.pending = None, None
        else:
            row.categories = list(g.categories)
            row.legal_basis = g.legal_basis
            row.expires = g.expires
            row.status, row.approved_by = "proposed", None
            row.proposed_by = actor.name
        row.updated_at = now
        session.add(row)
    for have in removed:
        row = by_id[have["id"]]
        if live and row.status == "approved":
            row.change, row.pending = "remove", None
            session.add(row)
        else:
            await session.exec(sa.delete(Grant).where(Grant.id == row.id))
            forget(session, [row])
            loaded.grants = [x for x in loaded.grants if x.id != row.id]
    new_rows = [new_grant_row(loaded.recipient.id, g, actor, "proposed") for g in added]
    session.add_all(new_rows)
    await session.flush()
    loaded.grants = loaded.grants + new_rows


async def _change_recipient(
    session: AsyncSession,
    loaded: Loaded,
    wanted: schema.Recipient,
    change: RecipientChange,
    actor: Actor,
) -> None:
    row = loaded.recipient
    if change.has_content():
        before = loaded.image()
        values = {name: getattr(wanted, name) for name in EDITABLE_FIELDS}
        values["regions"] = list(values["regions"])
        await stage_recipient(session, loaded, values, set(wanted.hosts))
        await _stage_grants(session, loaded, wanted, actor)
        row.updated_by = actor.name
        row.updated_at = utcnow()
        row.version += 1
        session.add(row)
        await session.flush()
        record_audit(
            session,
            actor,
            "recipient.update",
            "recipient",
            row.id,
            scope=scope_of(row.id),
            before=before,
            after=loaded.image(),
        )
    if change.status in NARROWING_STATUSES:
        action = "suspend" if change.status == "suspended" else "revoke"
        await set_recipient_status(session, row.id, action, actor, "registry apply")
    elif change.status == "approved":  # bootstrap only
        before = loaded.image()
        _approve_all(session, loaded, actor)
        await session.flush()
        record_audit(
            session,
            actor,
            "recipient.approve",
            "recipient",
            row.id,
            scope=scope_of(row.id),
            before=before,
            after=loaded.image(),
            note=_BOOTSTRAP_NOTE,
        )
    elif change.status == "proposed" and row.status != "proposed":
        row.status = "proposed"
        row.version += 1
        session.add(row)


_BOOTSTRAP_NOTE = "registry apply --db: the file's review is the approval"


async def _apply_workloads(
    session: AsyncSession,
    diff: ApplyDiff,
    current: dict[tuple[str, str], Workload],
    wanted: schema.Snapshot,
    actor: Actor,
) -> None:
    by_key = {w.key: w for w in wanted.workloads}
    for wid, fate in diff.workloads_removed.items():
        namespace, name = wid.split("/", 1)
        if fate == "revoked":
            await workloads.set_workload_status(
                session, namespace, name, "revoke", actor, "registry apply"
            )
        else:
            await workloads.delete_workload(session, namespace, name, actor)
    for change in diff.workloads_changed:
        key = tuple(change.id.split("/", 1))
        spec, row = by_key[key], current[key]
        if change.has_content():
            await workloads.stage_workload(
                session, row, {"purposes": spec.purposes, "recipients": spec.recipients}, actor
            )
        if change.status in NARROWING_STATUSES:
            action = "suspend" if change.status == "suspended" else "revoke"
            await workloads.set_workload_status(session, *key, action, actor, "registry apply")
        elif change.status == "approved":  # bootstrap only
            await workloads.approve_workload(session, *key, actor, _BOOTSTRAP_NOTE, four_eyes=False)
    for doc in diff.workloads_added:
        spec = by_key[(doc["namespace"], doc["name"])]
        status = "revoked" if doc["status"] == "revoked" else "proposed"
        await workloads.create_workload(session, spec, actor, status=status)
        if doc["status"] == "approved":
            await workloads.approve_workload(
                session, spec.namespace, spec.name, actor, _BOOTSTRAP_NOTE, four_eyes=False
            )


def _approve_all(session: AsyncSession, loaded: Loaded, actor: Actor) -> None:
    row = loaded.recipient
    row.status = "approved"
    row.version += 1
    session.add(row)
    for grant in loaded.grants:
        if grant.status == "proposed":
            grant.status, grant.approved_by = "approved", actor.name
            session.add(grant)
    session.add(_approval(row.id, "approved", actor))


async def _check_new_hosts_free(session: AsyncSession, wanted: list[schema.Recipient]) -> None:
    """409 naming each host the file gives a new recipient while another still holds it."""
    patterns = [h for r in wanted for h in r.hosts]
    if not patterns:
        return
    taken = (
        await session.exec(select(RecipientHost).where(RecipientHost.pattern.in_(patterns)))
    ).all()
    if taken:
        owners = {h.pattern: h.recipient_id for h in taken}
        raise conflict(
            "hosts still held by another recipient (a removal from a live recipient waits "
            "for its approval; approve it, then apply again): "
            + ", ".join(f"{p} ({o})" for p, o in sorted(owners.items())),
            hosts=owners,
        )


async def _add_recipients(
    session: AsyncSession, wanted: list[tuple[schema.Recipient, str]], actor: Actor
) -> None:
    """Insert new recipients in bulk: one flush per table, not per recipient (10,000 rows)."""
    if not wanted:
        return
    now = utcnow()
    rows = [new_recipient_row(w, actor, status=status, now=now) for w, status in wanted]
    session.add_all(rows)
    await session.flush()
    grant_status = {w.id: "approved" if s == "approved" else "proposed" for w, s in wanted}
    hosts = {
        w.id: [RecipientHost(recipient_id=w.id, pattern=p) for p in w.hosts] for w, _ in wanted
    }
    grants = {
        w.id: [new_grant_row(w.id, g, actor, grant_status[w.id]) for g in w.grants]
        for w, _ in wanted
    }
    session.add_all([h for hs in hosts.values() for h in hs])
    session.add_all([g for gs in grants.values() for g in gs])
    session.add_all([_approval(w.id, s, actor) for w, s in wanted if s == "approved"])
    await session.flush()  # grant ids, for the audit images
    for row in rows:
        image = Loaded(row, hosts[row.id], grants[row.id]).image()
        record_audit(
            session,
            actor,
            "recipient.create",
            "recipient",
            row.id,
            scope=scope_of(row.id),
            after=image,
        )
        if row.status == "approved":
            record_audit(
                session,
                actor,
                "recipient.approve",
                "recipient",
                row.id,
                scope=scope_of(row.id),
                after=image,
                note=_BOOTSTRAP_NOTE,
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
