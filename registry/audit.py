"""The append-only audit trail: every write adds one event in the same transaction."""

from __future__ import annotations

from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from registry.models import AuditEvent, utcnow


def record_audit(
    session: AsyncSession,
    *,
    actor: str,
    action: str,
    entity_type: str,
    entity_id: str,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> AuditEvent:
    """Add an audit event to the session's transaction (committed with the change it records).

    `action` is a dotted verb such as `recipient.create` or `flow.triage`; `before`/`after`
    are JSON images of the entity (None when it did not / no longer exists).
    """
    event = AuditEvent(
        time=utcnow(),
        actor=actor,
        action=action,
        entity_type=entity_type,
        entity_id=str(entity_id),
        before=before,
        after=after,
    )
    session.add(event)
    return event
