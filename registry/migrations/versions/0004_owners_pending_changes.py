"""Token owners, audit scope/token/note, pending changes of live recipients.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29

- `api_token.owner`: the person a token belongs to (four eyes compare people); existing
  tokens belong to a person named like the token.
- `audit_event.token_name`, `.scope`, `.note`: the token used, the reviewed entity an event
  belongs to (`recipient:<id>`; grant events find theirs in their images), a reviewer's note.
  Existing events are back-filled, which needs the append-only triggers lifted for the
  duration of this migration (and only for it).
- `recipient.pending`, `recipient_host.change`, `grant.change`, `grant.pending`: a live
  recipient's unapproved change, kept beside the live values the proxies enforce.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_MESSAGE = "audit_event is append-only"


def _lift_append_only(dialect: str) -> None:
    if dialect == "postgresql":
        op.execute("ALTER TABLE audit_event DISABLE TRIGGER audit_event_append_only")
    else:
        op.execute("DROP TRIGGER IF EXISTS audit_event_no_update")


def _restore_append_only(dialect: str) -> None:
    if dialect == "postgresql":
        op.execute("ALTER TABLE audit_event ENABLE TRIGGER audit_event_append_only")
    else:
        op.execute(
            "CREATE TRIGGER audit_event_no_update BEFORE UPDATE ON audit_event "
            f"BEGIN SELECT RAISE(ABORT, '{_MESSAGE}'); END"
        )


def _backfill_scope() -> None:
    bind = op.get_bind()
    audit = sa.table(
        "audit_event",
        sa.column("id", sa.BigInteger),
        sa.column("entity_type", sa.String),
        sa.column("entity_id", sa.String),
        sa.column("before", sa.JSON),
        sa.column("after", sa.JSON),
        sa.column("scope", sa.String),
    )
    bind.execute(
        audit.update()
        .where(audit.c.entity_type == "recipient")
        .values(scope=sa.literal("recipient:") + audit.c.entity_id)
    )
    rows = bind.execute(
        sa.select(audit.c.id, audit.c.before, audit.c.after).where(audit.c.entity_type == "grant")
    ).all()
    for event_id, before, after in rows:
        image = after or before or {}
        recipient_id = image.get("recipient_id") if isinstance(image, dict) else None
        if recipient_id:
            bind.execute(
                audit.update()
                .where(audit.c.id == event_id)
                .values(scope=f"recipient:{recipient_id}")
            )


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.add_column(
        "api_token",
        sa.Column("owner", sa.String(length=200), nullable=False, server_default=""),
    )
    op.execute("UPDATE api_token SET owner = name")
    op.create_index(op.f("ix_api_token_owner"), "api_token", ["owner"], unique=False)

    op.add_column("audit_event", sa.Column("token_name", sa.String(length=200), nullable=True))
    op.add_column("audit_event", sa.Column("scope", sa.String(length=200), nullable=True))
    op.add_column("audit_event", sa.Column("note", sa.Text(), nullable=True))
    op.create_index(op.f("ix_audit_event_scope_id"), "audit_event", ["scope", "id"], unique=False)
    _lift_append_only(dialect)
    try:
        _backfill_scope()
    finally:
        _restore_append_only(dialect)

    op.add_column("recipient", sa.Column("pending", sa.JSON(), nullable=True))
    op.add_column("recipient_host", sa.Column("change", sa.String(length=8), nullable=True))
    op.add_column("grant", sa.Column("change", sa.String(length=8), nullable=True))
    op.add_column("grant", sa.Column("pending", sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column("grant", "pending")
    op.drop_column("grant", "change")
    op.drop_column("recipient_host", "change")
    op.drop_column("recipient", "pending")
    op.drop_index(op.f("ix_audit_event_scope_id"), table_name="audit_event")
    op.drop_column("audit_event", "note")
    op.drop_column("audit_event", "scope")
    op.drop_column("audit_event", "token_name")
    op.drop_index(op.f("ix_api_token_owner"), table_name="api_token")
    op.drop_column("api_token", "owner")
