"""Blocked flows keep their fault, the status the app got and each reason's category; stored
paths lose the personal data found in them.

`fault` tells a 503 (sharewall failed closed) apart from a policy denial; `reasons` is
`[{code, category?}]` (filled from `reason_codes` for older rows). Paths stored before the
proxies redacted them are redacted here from each flow's own findings, by the same function
the proxy and the ingest use.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from sharewall.redaction import redact_path

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BATCH = 1000


def upgrade() -> None:
    with op.batch_alter_table("blocked_flow") as batch:
        batch.add_column(sa.Column("fault", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("status", sa.Integer(), nullable=True))
        batch.add_column(
            sa.Column("reasons", sa.JSON(), nullable=False, server_default=sa.text("'[]'"))
        )
    _backfill(op.get_bind())


def _json(value: object) -> list:
    if isinstance(value, str):  # some drivers hand JSON back as text in raw SELECTs
        value = json.loads(value)
    return list(value or [])


def _backfill(conn: sa.Connection) -> None:
    flows = sa.table(
        "blocked_flow",
        sa.column("decision_id", sa.String),
        sa.column("path", sa.Text),
        sa.column("findings", sa.JSON),
        sa.column("reason_codes", sa.JSON),
        sa.column("reasons", sa.JSON),
    )
    after = ""
    while True:
        rows = conn.execute(
            sa.select(flows.c.decision_id, flows.c.path, flows.c.findings, flows.c.reason_codes)
            .where(flows.c.decision_id > after)
            .order_by(flows.c.decision_id)
            .limit(_BATCH)
        ).all()
        if not rows:
            return
        for decision_id, path, findings, codes in rows:
            conn.execute(
                sa.update(flows)
                .where(flows.c.decision_id == decision_id)
                .values(
                    path=redact_path(path or "", _json(findings)),
                    reasons=[{"code": c} for c in _json(codes)],
                )
            )
        after = rows[-1][0]


def downgrade() -> None:
    with op.batch_alter_table("blocked_flow") as batch:
        batch.drop_column("reasons")
        batch.drop_column("status")
        batch.drop_column("fault")
