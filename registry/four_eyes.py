"""Four eyes over the audit trail: whoever authored any part of a change may not approve it.

"Any part" is read from the audit trail, not from columns such as `proposed_by`: every
authoring event in the entity's scope since its last approval counts (a proposal, an edit of
the notes, a grant added by a colleague, a file applied through `registry apply`). People,
not tokens, are compared: the audit actor is the token's owner.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlmodel.ext.asyncio.session import AsyncSession

from registry.errors import ApiError
from registry.models import AuditEvent, as_utc

# Events that write content a reviewer is asked to approve.
AUTHORING_ACTIONS = frozenset(
    {
        "recipient.create",
        "recipient.update",
        "grant.create",
        "grant.update",
        "grant.delete",
        "workload.create",
        "workload.update",
    }
)
# Events after which earlier authors no longer count: an approval makes their work live
# (approved by someone else), a deletion ends the entity (an id may be reused).
BOUNDARY_ACTIONS = frozenset(
    {"recipient.approve", "recipient.delete", "workload.approve", "workload.delete"}
)


@dataclass(frozen=True)
class Authored:
    """One authoring event: what a person did, to what, when."""

    actor: str
    action: str
    entity: str
    time: datetime

    def describe(self) -> str:
        return f"{self.action} ({self.entity}) at {self.time:%Y-%m-%d %H:%M:%SZ}"


async def authored_since_approval(session: AsyncSession, scope: str) -> list[Authored]:
    """The authoring events of `scope` since its last approval (or deletion), oldest first."""
    table = AuditEvent.__table__.c
    conn = await session.connection()
    last = (
        await conn.execute(
            sa.select(sa.func.max(table.id)).where(
                table.scope == scope, table.action.in_(BOUNDARY_ACTIONS)
            )
        )
    ).scalar_one_or_none()
    query = (
        sa.select(table.actor, table.action, table.entity_type, table.entity_id, table.time)
        .where(table.scope == scope, table.action.in_(AUTHORING_ACTIONS))
        .order_by(table.id)
    )
    if last is not None:
        query = query.where(table.id > last)
    rows = (await conn.execute(query)).all()
    return [
        Authored(actor, action, f"{entity_type} {entity_id}", as_utc(when))
        for actor, action, entity_type, entity_id, when in rows
    ]


def authors_of(events: list[Authored]) -> list[str]:
    """The distinct people among `events`, in order of first appearance."""
    return list(dict.fromkeys(e.actor for e in events))


async def check_four_eyes(session: AsyncSession, scope: str, approver: str, what: str) -> None:
    """Refuse (403 `four-eyes`) when `approver` authored any part of `scope`'s pending change."""
    events = await authored_since_approval(session, scope)
    mine = [e for e in events if e.actor == approver]
    if not mine:
        return
    authors = authors_of(events)
    shown = "; ".join(e.describe() for e in mine[:5])
    more = f" and {len(mine) - 5} more" if len(mine) > 5 else ""
    raise ApiError(
        403,
        "four-eyes",
        "Forbidden",
        f"{approver} authored part of {what} since its last approval ({shown}{more}); "
        f"it must be approved by a reviewer who authored none of it "
        f"(authors: {', '.join(authors)})",
        {
            "approver": approver,
            "authors": authors,
            "authored": [
                {"actor": e.actor, "action": e.action, "entity": e.entity, "time": e.time}
                for e in events
            ],
        },
    )
