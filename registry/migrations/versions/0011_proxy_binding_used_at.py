"""Proxy id bindings remember when they were last used, so unused ones can be released.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30

A Deployment's pods bind one proxy id each (their pod name) and nothing released the bindings
of pods long gone. `proxy_binding.used_at` is when its shipper last shipped as it (kept to
within an hour: `registry.ingest.bind_proxy_ids`); the retention job releases the bindings
unused for `proxy_id_idle_days`. Bindings stored so far count as used when they were bound.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("proxy_binding", sa.Column("used_at", sa.DateTime(timezone=True)))
    op.execute("UPDATE proxy_binding SET used_at = bound_at")
    with op.batch_alter_table("proxy_binding") as batch:
        batch.alter_column("used_at", existing_type=sa.DateTime(timezone=True), nullable=False)
    op.create_index(op.f("ix_proxy_binding_used_at"), "proxy_binding", ["used_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_proxy_binding_used_at"), table_name="proxy_binding")
    op.drop_column("proxy_binding", "used_at")
