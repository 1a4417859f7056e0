"""A rotated token keeps authenticating until the end of its grace: `api_token.expires_at`.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30

`POST /v1/tokens/{id}/rotate` revoked the old secret at once, so a sidecar was refused (401)
until it held the new one. The old token now gets `expires_at` (the end of the grace the
caller chose) and stays live until then; NULL (every token so far) never expires. A token
with `expires_at` has been rotated: it cannot be rotated again.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("api_token", sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    # Without the column a token in its grace would live for ever: its grace ends now.
    op.execute(
        "UPDATE api_token SET revoked_at = CASE WHEN expires_at < CURRENT_TIMESTAMP"
        " THEN expires_at ELSE CURRENT_TIMESTAMP END"
        " WHERE expires_at IS NOT NULL AND revoked_at IS NULL"
    )
    op.drop_column("api_token", "expires_at")
