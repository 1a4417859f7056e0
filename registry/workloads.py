"""Workloads: propose, edit, review (four eyes), suspend, revoke, delete — with audit.

Reviewed like recipients (see `registry.service`): an engineer proposes; a reviewer who
authored no part of it since its last approval approves the version they looked at. An edit
of a live (approved or suspended) workload waits in `workload.pending` while the snapshot keeps
its live purposes and recipients. The snapshot carries live workloads only: a proposal never
switches source binding on, and a live workload cannot be deleted (revoking it is a
reviewer's action), so an engineer cannot widen what a workload may do without review.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
import sqlalchemy as sa
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from registry.audit import Actor, record_audit
from registry.changes import LIVE_STATUSES
from registry.errors import conflict, invalid_field, not_found
from registry.four_eyes import authored_since_approval, authors_of, check_four_eyes
from registry.models import Approval, Recipient, Workload, as_utc, utcnow
from registry.preconditions import IfMatch, check_version, require_version
from registry.state import bump_snapshot_version
from sharewall import snapshot as schema

VALUE_FIELDS = ("purposes", "recipients")


def workload_id(namespace: str, name: str) -> str:
    """`<namespace>/<name>`: a workload's id in the audit trail and in URLs."""
    return f"{namespace}/{name}"


def scope_of(namespace: str, name: str) -> str:
    """The audit scope four eyes read for a workload."""
    return f"workload:{workload_id(namespace, name)}"


def is_live(workload: Workload) -> bool:
    """True when the workload has an approved version the proxies enforce."""
    return workload.status in LIVE_STATUSES


def _values(workload: Workload) -> dict[str, Any]:
    return {
        "purposes": list(workload.purposes),
        "recipients": None if workload.recipients is None else list(workload.recipients),
    }


def proposed_values(workload: Workload) -> dict[str, Any]:
    """Purposes and recipients once the pending change (if any) is approved."""
    values = _values(workload)
    if is_live(workload) and workload.pending:
        values.update(workload.pending)
    return values


def has_pending_change(workload: Workload) -> bool:
    """True when the workload awaits approval (a proposal, or a live one's staged edit)."""
    return workload.status == "proposed" or (is_live(workload) and bool(workload.pending))


def _entry(workload: Workload, values: dict[str, Any], status: str) -> dict[str, Any]:
    """A workload in the registry-file shape."""
    return {"namespace": workload.namespace, "name": workload.name, "status": status, **values}


def live_state(workload: Workload) -> dict[str, Any] | None:
    """What the proxies enforce for this workload now, or None when it is not live."""
    return _entry(workload, _values(workload), workload.status) if is_live(workload) else None


def proposed_state(workload: Workload) -> dict[str, Any]:
    """What approving the workload's pending change makes live."""
    return _entry(workload, proposed_values(workload), "approved")


def diff_states(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """Fields that differ (`{name: [live, proposed]}`), in the recipients' diff shape."""
    old = old or {}
    fields = {
        k: [old.get(k), new.get(k)] for k in (*VALUE_FIELDS, "status") if old.get(k) != new.get(k)
    }
    return {"fields": fields}


@dataclass
class WorkloadView:
    """Views of one workload row."""

    workload: Workload

    def pending_view(self) -> dict[str, Any] | None:
        w = self.workload
        if not has_pending_change(w):
            return None
        proposed = proposed_state(w)
        return {
            "kind": "update" if is_live(w) else "proposal",
            "proposed": proposed,
            "diff": diff_states(live_state(w), proposed),
        }

    def view(self) -> dict[str, Any]:
        w = self.workload
        return {
            "namespace": w.namespace,
            "name": w.name,
            "status": w.status,
            "purposes": list(w.purposes),
            "recipients": None if w.recipients is None else list(w.recipients),
            "proposed_by": w.proposed_by,
            "updated_by": w.updated_by,
            "created_at": as_utc(w.created_at),
            "updated_at": as_utc(w.updated_at),
            "version": w.version,
            "pending_change": self.pending_view(),
        }

    def image(self) -> dict[str, Any]:
        return orjson.loads(orjson.dumps(self.view()))


def _audit_workload(
    session: AsyncSession,
    actor: Actor,
    verb: str,
    w: Workload,
    *,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    note: str | None = None,
) -> None:
    """Record one `workload.<verb>` event, in the workload's four-eyes scope."""
    record_audit(
        session,
        actor,
        f"workload.{verb}",
        "workload",
        workload_id(w.namespace, w.name),
        scope=scope_of(w.namespace, w.name),
        before=before,
        after=after,
        note=note,
    )


def _approval(w: Workload, action: str, actor: Actor, note: str | None) -> Approval:
    return Approval(
        entity_type="workload",
        entity_id=workload_id(w.namespace, w.name),
        action=action,
        actor=actor.name,
        time=utcnow(),
        note=note,
    )


# --------------------------------------------------------------------------- reads


async def load_workload(
    session: AsyncSession, namespace: str, name: str, *, for_update: bool = False
) -> Workload:
    """A workload, or 404."""
    query = select(Workload).where(Workload.namespace == namespace, Workload.name == name)
    if for_update:
        query = query.with_for_update()
    workload = (await session.exec(query)).first()
    if workload is None:
        raise not_found("workload", workload_id(namespace, name))
    return workload


async def list_workloads(
    session: AsyncSession, *, namespace: str | None = None, status: str | None = None
) -> list[Workload]:
    """Every workload (of a namespace, of a status), ordered by namespace and name."""
    query = select(Workload).order_by(Workload.namespace, Workload.name)
    if namespace is not None:
        query = query.where(Workload.namespace == namespace)
    if status is not None:
        query = query.where(Workload.status == status)
    return list((await session.exec(query)).all())


async def change_view(session: AsyncSession, workload: Workload) -> dict[str, Any] | None:
    """A workload's pending change as `GET /v1/changes` lists it."""
    pending = WorkloadView(workload).pending_view()
    if pending is None:
        return None
    authored = await authored_since_approval(session, scope_of(workload.namespace, workload.name))
    return {
        "entity_type": "workload",
        "entity_id": workload_id(workload.namespace, workload.name),
        "version": workload.version,
        "status": workload.status,
        "live": live_state(workload),
        **pending,
        "authors": authors_of(authored),
        "updated_by": workload.updated_by,
        "updated_at": as_utc(workload.updated_at),
    }


async def list_pending_changes(session: AsyncSession) -> list[dict[str, Any]]:
    """Every workload awaiting approval, with its diff."""
    out = []
    for workload in await list_workloads(session):
        view = await change_view(session, workload)
        if view is not None:
            out.append(view)
    return out


async def list_reviews(session: AsyncSession, namespace: str, name: str) -> list[dict[str, Any]]:
    """A workload's review decisions with their notes."""
    rows = (
        await session.exec(
            select(Approval)
            .where(
                Approval.entity_type == "workload",
                Approval.entity_id == workload_id(namespace, name),
            )
            .order_by(Approval.id)
        )
    ).all()
    return [
        {"action": a.action, "actor": a.actor, "time": as_utc(a.time), "note": a.note} for a in rows
    ]


# --------------------------------------------------------------------------- writes


async def _check_recipients(session: AsyncSession, recipients: list[str] | None) -> None:
    if not recipients:
        return
    known = set(
        (await session.exec(select(Recipient.id).where(Recipient.id.in_(recipients)))).all()
    )
    unknown = [r for r in recipients if r not in known]
    if unknown:
        raise invalid_field("recipients", f"unknown recipients {unknown}")


def _validated(namespace: str, name: str, values: dict[str, Any]) -> dict[str, Any]:
    workload = schema.Workload.from_data({"namespace": namespace, "name": name, **values})
    return {
        "purposes": list(workload.purposes),
        "recipients": None if workload.recipients is None else list(workload.recipients),
    }


async def create_workload(
    session: AsyncSession,
    spec: schema.Workload,
    actor: Actor,
    *,
    status: str = "proposed",
) -> Workload:
    """Propose a workload (`status` other than proposed: `registry apply --db` only)."""
    if await session.get(Workload, (spec.namespace, spec.name)) is not None:
        raise conflict(f"workload {workload_id(spec.namespace, spec.name)} already exists")
    values = _validated(spec.namespace, spec.name, {f: getattr(spec, f) for f in VALUE_FIELDS})
    await _check_recipients(session, values["recipients"])
    now = utcnow()
    workload = Workload(
        namespace=spec.namespace,
        name=spec.name,
        status=status,
        purposes=values["purposes"],
        recipients=values["recipients"],
        proposed_by=actor.name,
        updated_by=actor.name,
        created_at=now,
        updated_at=now,
        version=1,
    )
    session.add(workload)
    await session.flush()
    _audit_workload(session, actor, "create", workload, after=WorkloadView(workload).image())
    if is_live(workload):
        await bump_snapshot_version(session)
    return workload


async def stage_workload(
    session: AsyncSession, workload: Workload, values: dict[str, Any], actor: Actor
) -> bool:
    """Make `values` the workload's proposed purposes/recipients; True when anything changed."""
    values = _validated(workload.namespace, workload.name, values)
    if values == proposed_values(workload):
        return False
    await _check_recipients(session, values["recipients"])
    before = WorkloadView(workload).image()
    if is_live(workload):
        live = _values(workload)
        pending = {k: v for k, v in values.items() if live[k] != v}
        workload.pending = pending or None
    else:
        workload.purposes = values["purposes"]
        workload.recipients = values["recipients"]
        if workload.status == "revoked":
            workload.status = "proposed"
    workload.updated_by = actor.name
    workload.updated_at = utcnow()
    workload.version += 1
    session.add(workload)
    await session.flush()
    _audit_workload(
        session, actor, "update", workload, before=before, after=WorkloadView(workload).image()
    )
    return True


async def update_workload(
    session: AsyncSession,
    namespace: str,
    name: str,
    changes: dict[str, Any],
    actor: Actor,
    *,
    expected_version: IfMatch | None = None,
) -> Workload:
    """Edit purposes and/or recipients (`recipients: null` = any recipient)."""
    workload = await load_workload(session, namespace, name, for_update=True)
    _check_version(workload, expected_version)
    await stage_workload(session, workload, {**proposed_values(workload), **changes}, actor)
    return workload


async def delete_workload(
    session: AsyncSession,
    namespace: str,
    name: str,
    actor: Actor,
    *,
    expected_version: IfMatch | None = None,
) -> None:
    """Delete a workload that is not live (a live one is revoked by a reviewer first)."""
    workload = await load_workload(session, namespace, name, for_update=True)
    _check_version(workload, expected_version)
    if is_live(workload):
        raise conflict(
            f"workload {workload_id(namespace, name)} is {workload.status}: a reviewer revokes "
            "it first (deleting a live workload could switch source binding off)"
        )
    before = WorkloadView(workload).image()
    await session.exec(
        sa.delete(Workload).where(Workload.namespace == namespace, Workload.name == name)
    )
    if workload in session:
        session.expunge(workload)
    _audit_workload(session, actor, "delete", workload, before=before)


def _check_version(workload: Workload, expected: IfMatch | None) -> None:
    check_version(
        expected, workload.version, f"workload {workload_id(workload.namespace, workload.name)}"
    )


async def approve_workload(
    session: AsyncSession,
    namespace: str,
    name: str,
    actor: Actor,
    note: str | None = None,
    *,
    expected_version: IfMatch | None = None,
    four_eyes: bool = True,
) -> Workload:
    """Approve a workload's pending change (If-Match required; four eyes)."""
    wid = workload_id(namespace, name)
    workload = await load_workload(session, namespace, name, for_update=True)
    if four_eyes:
        _check_version(workload, require_version(expected_version, f"workload {wid}"))
    if workload.status == "revoked":
        raise conflict(f"workload {wid} is revoked; edit it to propose it again")
    if workload.status == "approved" and not has_pending_change(workload):
        raise conflict(f"workload {wid} has nothing awaiting approval")
    if four_eyes:
        await check_four_eyes(session, scope_of(namespace, name), actor.name, f"workload {wid}")
    before = WorkloadView(workload).image()
    for key, value in (workload.pending or {}).items():
        setattr(workload, key, value)
    workload.pending = None
    workload.status = "approved"
    workload.version += 1
    session.add(workload)
    session.add(_approval(workload, "approve", actor, note))
    await session.flush()
    _audit_workload(
        session,
        actor,
        "approve",
        workload,
        before=before,
        after=WorkloadView(workload).image(),
        note=note,
    )
    await bump_snapshot_version(session)
    return workload


async def reject_workload(
    session: AsyncSession,
    namespace: str,
    name: str,
    actor: Actor,
    note: str | None = None,
    *,
    expected_version: IfMatch | None = None,
) -> Workload:
    """Discard a live workload's pending change, or turn a proposal into `revoked`."""
    workload = await load_workload(session, namespace, name, for_update=True)
    _check_version(workload, expected_version)
    if not has_pending_change(workload):
        raise conflict(f"workload {workload_id(namespace, name)} has nothing awaiting approval")
    before = WorkloadView(workload).image()
    if is_live(workload):
        workload.pending = None
    else:
        workload.status = "revoked"
    workload.version += 1
    session.add(workload)
    session.add(_approval(workload, "reject", actor, note))
    await session.flush()
    _audit_workload(
        session,
        actor,
        "reject",
        workload,
        before=before,
        after=WorkloadView(workload).image(),
        note=note,
    )
    return workload


async def set_workload_status(
    session: AsyncSession,
    namespace: str,
    name: str,
    action: str,
    actor: Actor,
    note: str | None = None,
    *,
    expected_version: IfMatch | None = None,
) -> Workload:
    """Suspend (approved → suspended) or revoke (any → revoked) a workload, at once."""
    target = {"suspend": "suspended", "revoke": "revoked"}[action]
    workload = await load_workload(session, namespace, name, for_update=True)
    _check_version(workload, expected_version)
    if action == "suspend" and workload.status != "approved":
        raise conflict(f"only an approved workload can be suspended (it is {workload.status})")
    if workload.status == target:
        return workload
    before = WorkloadView(workload).image()
    was_live = is_live(workload)
    if target == "revoked" and workload.pending:
        # No longer live: the staged edit becomes its (unapproved) content.
        for key, value in workload.pending.items():
            setattr(workload, key, value)
        workload.pending = None
    workload.status = target
    workload.version += 1
    session.add(workload)
    session.add(_approval(workload, action, actor, note))
    await session.flush()
    _audit_workload(
        session,
        actor,
        action,
        workload,
        before=before,
        after=WorkloadView(workload).image(),
        note=note,
    )
    if was_live:
        await bump_snapshot_version(session)
    return workload
