"""Shipped records are keyed by the shipping identity: flows, rotations, proxy ids.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30

- A decision id belonged to the first token that shipped it, so a token that learnt another
  proxy's decision id could get the real record refused. Flows are now keyed by (shipping
  identity, decision id): `blocked_flow`'s primary key is (token_id, decision_id), and
  `flow_reason` / `flow_category` carry `token_id` and reference both columns. Flows stored
  before migration 0008 (token NULL) get token 0. A flow has a `version` (its triage ETag).
- A rotated token keeps its predecessor's identity: `api_token.lineage_id` names the first
  token of the lineage (NULL: the token is the first), and what a token ships is stored under
  that identity, so a rotated proxy's re-sent minute replaces its counts instead of adding.
  Every token so far is the first of its lineage: the ids stored by 0008 are identities.
- `proxy_binding` binds a proxy id to the identity that first shipped as it; filled from what
  was stored (the lowest identity of each proxy id; rows without a token bind nothing).

SQLite rebuilds tables in batch mode with foreign keys enforced: the children drop their
reference first, so rebuilding `blocked_flow` (a DROP of the old table) cascades to nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_CHILDREN = {"flow_reason": "code", "flow_category": "category"}


def _token_column() -> sa.Column:
    return sa.Column("token_id", sa.BigInteger(), server_default="0", nullable=False)


def upgrade() -> None:
    op.add_column("api_token", sa.Column("lineage_id", sa.BigInteger(), nullable=True))
    op.execute("UPDATE blocked_flow SET token_id = 0 WHERE token_id IS NULL")
    for child, column in _CHILDREN.items():
        with op.batch_alter_table(child) as batch:
            batch.add_column(_token_column())
            batch.drop_constraint(f"fk_{child}_decision_id_blocked_flow", type_="foreignkey")
            batch.drop_constraint(f"pk_{child}", type_="primary")
            batch.create_primary_key(f"pk_{child}", ["token_id", "decision_id", column])
        op.execute(
            f"UPDATE {child} SET token_id = (SELECT f.token_id FROM blocked_flow f"  # noqa: S608
            f" WHERE f.decision_id = {child}.decision_id)"
        )
    with op.batch_alter_table("blocked_flow") as batch:
        batch.alter_column(
            "token_id", existing_type=sa.BigInteger(), nullable=False, server_default="0"
        )
        batch.add_column(sa.Column("version", sa.Integer(), server_default="1", nullable=False))
        batch.drop_constraint("pk_blocked_flow", type_="primary")
        batch.create_primary_key("pk_blocked_flow", ["token_id", "decision_id"])
    for child in _CHILDREN:
        with op.batch_alter_table(child) as batch:
            batch.create_foreign_key(
                f"fk_{child}_token_id_blocked_flow",
                "blocked_flow",
                ["token_id", "decision_id"],
                ["token_id", "decision_id"],
                ondelete="CASCADE",
            )
    binding = op.create_table(
        "proxy_binding",
        sa.Column("proxy_id", sa.String(length=200), nullable=False),
        sa.Column("token_id", sa.BigInteger(), nullable=False),
        sa.Column("bound_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("proxy_id", name=op.f("pk_proxy_binding")),
    )
    op.create_index(op.f("ix_proxy_binding_token_id"), "proxy_binding", ["token_id"])
    shipped = sa.union_all(
        *(
            sa.select(sa.column("proxy_id"), sa.column("token_id"))
            .select_from(sa.table(name))
            .where(sa.column("token_id") > 0, sa.column("proxy_id").is_not(None))
            for name in ("ledger_entry", "decision_fact_shipped", "blocked_flow")
        )
    ).subquery()
    op.execute(
        binding.insert().from_select(
            ["proxy_id", "token_id", "bound_at"],
            sa.select(
                shipped.c.proxy_id, sa.func.min(shipped.c.token_id), sa.func.current_timestamp()
            ).group_by(shipped.c.proxy_id),
        )
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_proxy_binding_token_id"), table_name="proxy_binding")
    op.drop_table("proxy_binding")
    # A decision id shipped by several identities: keep the lowest identity's record.
    for table in ("flow_reason", "flow_category", "blocked_flow"):
        op.execute(
            f"DELETE FROM {table} WHERE EXISTS (SELECT 1 FROM blocked_flow o"  # noqa: S608
            f" WHERE o.decision_id = {table}.decision_id AND o.token_id < {table}.token_id)"
        )
    for child in _CHILDREN:
        with op.batch_alter_table(child) as batch:
            batch.drop_constraint(f"fk_{child}_token_id_blocked_flow", type_="foreignkey")
    with op.batch_alter_table("blocked_flow") as batch:
        batch.drop_constraint("pk_blocked_flow", type_="primary")
        batch.create_primary_key("pk_blocked_flow", ["decision_id"])
        batch.drop_column("version")
        batch.alter_column(
            "token_id", existing_type=sa.BigInteger(), nullable=True, server_default=None
        )
    op.execute("UPDATE blocked_flow SET token_id = NULL WHERE token_id = 0")
    for child, column in _CHILDREN.items():
        with op.batch_alter_table(child) as batch:
            batch.drop_constraint(f"pk_{child}", type_="primary")
            batch.create_primary_key(f"pk_{child}", ["decision_id", column])
            batch.drop_column("token_id")
            batch.create_foreign_key(
                f"fk_{child}_decision_id_blocked_flow",
                "blocked_flow",
                ["decision_id"],
                ["decision_id"],
                ondelete="CASCADE",
            )
    op.drop_column("api_token", "lineage_id")
