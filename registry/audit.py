"""The append-only audit trail: every write adds one event in the same transaction."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from registry.models import AuditEvent, utcnow


@dataclass(frozen=True)
class Actor:
    """Who makes a change: the person (a token's owner, the audit actor), role, token name."""

    name: str
    role: str
    token: str | None = None


# Changes made from the command line with direct database access.
CLI_ACTOR = Actor(name="cli", role="admin")


def record_audit(
    session: AsyncSession,
    actor: Actor,
    action: str,
    entity_type: str,
    entity_id: str,
    *,
    scope: str | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    note: str | None = None,
) -> AuditEvent:
    """Add an audit event to the session's transaction (committed with the change it records).

    The event names `actor.name` (the person, a token's owner) and `actor.token` (the token
    they used); `action` is a dotted verb such as `recipient.create` or `flow.triage`;
    `before`/`after` are JSON images of the entity (None when it did not / no longer exists);
    `scope` names the reviewed entity the event belongs to (`recipient:<id>`), which four eyes
    read; `note` is a reviewer's note.
    """
    event = AuditEvent(
        time=utcnow(),
        actor=actor.name,
        action=action,
        entity_type=entity_type,
        entity_id=str(entity_id),
        before=before,
        after=after,
        token_name=actor.token,
        scope=scope,
        note=note,
    )
    session.add(event)
    return event
