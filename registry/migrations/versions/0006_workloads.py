"""Workloads (purposes bound to callers), reviewed like recipients; longer entity ids.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30

A workload is audited as `workload` `<namespace>/<name>` (up to 317 characters), so the
entity id columns of `audit_event` and `approval`, and `audit_event.scope`, grow. SQLite
rebuilds a table to change a column, which drops its triggers: the append-only triggers of
`audit_event` are created again afterwards.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_MESSAGE = "audit_event is append-only"


def _sqlite_triggers() -> None:
    for verb in ("UPDATE", "DELETE"):
        op.execute(f"DROP TRIGGER IF EXISTS audit_event_no_{verb.lower()}")
        op.execute(
            f"CREATE TRIGGER audit_event_no_{verb.lower()} BEFORE {verb} ON audit_event "
            f"BEGIN SELECT RAISE(ABORT, '{_MESSAGE}'); END"
        )


def _resize(entity_id: int, scope: int) -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:
        for verb in ("update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS audit_event_no_{verb}")
    with op.batch_alter_table("audit_event") as batch:
        batch.alter_column("entity_id", type_=sa.String(length=entity_id), existing_nullable=False)
        batch.alter_column("scope", type_=sa.String(length=scope), existing_nullable=True)
    with op.batch_alter_table("approval") as batch:
        batch.alter_column("entity_id", type_=sa.String(length=entity_id), existing_nullable=False)
    if sqlite:
        _sqlite_triggers()


def upgrade() -> None:
    op.create_table(
        "workload",
        sa.Column("namespace", sa.String(length=63), nullable=False),
        sa.Column("name", sa.String(length=253), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("purposes", sa.JSON(), nullable=False),
        sa.Column("recipients", sa.JSON(), nullable=True),
        sa.Column("pending", sa.JSON(), nullable=True),
        sa.Column("proposed_by", sa.String(length=200), nullable=False),
        sa.Column("updated_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("namespace", "name", name=op.f("pk_workload")),
    )
    op.create_index(op.f("ix_workload_status"), "workload", ["status"], unique=False)
    _resize(320, 330)


def downgrade() -> None:
    _resize(100, 200)
    op.drop_index(op.f("ix_workload_status"), table_name="workload")
    op.drop_table("workload")
