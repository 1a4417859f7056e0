"""Decision facts: calls per hour and distinct policy fact, replayed by `POST /v1/impact`.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "decision_fact",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("hour", sa.DateTime(timezone=True), nullable=False),
        sa.Column("fact_key", sa.String(length=64), nullable=False),
        sa.Column("source_workload", sa.String(length=200), nullable=False),
        sa.Column("source_namespace", sa.String(length=200), nullable=False),
        sa.Column("host", sa.String(length=260), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("recipient_id", sa.String(length=63), nullable=False),
        sa.Column("purpose", sa.String(length=64), nullable=False),
        sa.Column("categories", sa.String(length=2000), nullable=False),
        sa.Column("scheme", sa.String(length=8), nullable=False),
        sa.Column("inspected", sa.Boolean(), nullable=False),
        sa.Column("tls_upstream", sa.Boolean(), nullable=False),
        sa.Column("complete", sa.Boolean(), nullable=False),
        sa.Column("verdict", sa.String(length=8), nullable=False),
        sa.Column("reason_codes", sa.String(length=1000), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_decision_fact")),
        sa.UniqueConstraint("hour", "fact_key", name="uq_decision_fact_key"),
    )
    op.create_index(op.f("ix_decision_fact_hour"), "decision_fact", ["hour"], unique=False)
    op.create_table(
        "decision_fact_shipped",
        sa.Column("proxy_id", sa.String(length=200), nullable=False),
        sa.Column("minute", sa.DateTime(timezone=True), nullable=False),
        sa.Column("fact_key", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint(
            "proxy_id", "minute", "fact_key", name=op.f("pk_decision_fact_shipped")
        ),
    )
    op.create_index(
        op.f("ix_decision_fact_shipped_minute"), "decision_fact_shipped", ["minute"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_decision_fact_shipped_minute"), table_name="decision_fact_shipped")
    op.drop_table("decision_fact_shipped")
    op.drop_index(op.f("ix_decision_fact_hour"), table_name="decision_fact")
    op.drop_table("decision_fact")
