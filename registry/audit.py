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
    token_name: str | None = None,
    scope: str | None = None,
    note: str | None = None,
) -> AuditEvent:
    """Add an audit event to the session's transaction (committed with the change it records).

    `actor` is the person (a token's owner) and `token_name` the token they used; `action`
    is a dotted verb such as `recipient.create` or `flow.triage`; `before`/`after` are JSON
    images of the entity (None when it did not / no longer exists); `scope` names the
    reviewed entity the event belongs to (`recipient:<id>`), which four eyes read; `note` is
    a reviewer's note.
    """
    event = AuditEvent(
        time=utcnow(),
        actor=actor,
        action=action,
        entity_type=entity_type,
        entity_id=str(entity_id),
        before=before,
        after=after,
        token_name=token_name,
        scope=scope,
        note=note,
    )
    session.add(event)
    return event
