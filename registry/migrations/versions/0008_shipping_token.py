"""What proxies ship is keyed by the token that shipped it, not by the proxy id it names.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30

Any proxy token could name another proxy's `proxy_id` and so replace that proxy's ledger
counts or mark its facts of a minute as already counted. The shipping token is the identity:
`ledger_entry`'s key and `decision_fact_shipped`'s primary key start with `token_id`, and
`blocked_flow` records which token shipped each flow (a decision id belongs to the first
token that shipped it). Rows stored before this revision keep `token_id` 0 (ledger, facts)
or NULL (flows): nobody can re-send them.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_LEDGER_KEY = [
    "proxy_id",
    "minute",
    "source_workload",
    "source_namespace",
    "recipient_id",
    "purpose",
    "category",
]


def _token_column() -> sa.Column:
    return sa.Column("token_id", sa.BigInteger(), server_default="0", nullable=False)


def upgrade() -> None:
    op.add_column("blocked_flow", sa.Column("token_id", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("ledger_entry") as batch:
        batch.add_column(_token_column())
        batch.drop_constraint("uq_ledger_entry_key", type_="unique")
        batch.create_unique_constraint("uq_ledger_entry_key", ["token_id", *_LEDGER_KEY])
    with op.batch_alter_table("decision_fact_shipped") as batch:
        batch.add_column(_token_column())
        batch.drop_constraint("pk_decision_fact_shipped", type_="primary")
        batch.create_primary_key(
            "pk_decision_fact_shipped", ["token_id", "proxy_id", "minute", "fact_key"]
        )


def downgrade() -> None:
    # Rows of several tokens may share a (proxy, minute, fact) now: keep one of each.
    op.execute(
        "DELETE FROM decision_fact_shipped WHERE EXISTS (SELECT 1 FROM decision_fact_shipped o"
        " WHERE o.proxy_id = decision_fact_shipped.proxy_id"
        " AND o.minute = decision_fact_shipped.minute"
        " AND o.fact_key = decision_fact_shipped.fact_key"
        " AND o.token_id < decision_fact_shipped.token_id)"
    )
    with op.batch_alter_table("decision_fact_shipped") as batch:
        batch.drop_constraint("pk_decision_fact_shipped", type_="primary")
        batch.create_primary_key("pk_decision_fact_shipped", ["proxy_id", "minute", "fact_key"])
        batch.drop_column("token_id")
    op.execute(
        "DELETE FROM ledger_entry WHERE EXISTS (SELECT 1 FROM ledger_entry o"
        " WHERE o.proxy_id = ledger_entry.proxy_id AND o.minute = ledger_entry.minute"
        " AND o.source_workload = ledger_entry.source_workload"
        " AND o.source_namespace = ledger_entry.source_namespace"
        " AND o.recipient_id = ledger_entry.recipient_id AND o.purpose = ledger_entry.purpose"
        " AND o.category = ledger_entry.category AND o.token_id < ledger_entry.token_id)"
    )
    with op.batch_alter_table("ledger_entry") as batch:
        batch.drop_constraint("uq_ledger_entry_key", type_="unique")
        batch.create_unique_constraint("uq_ledger_entry_key", _LEDGER_KEY)
        batch.drop_column("token_id")
    op.drop_column("blocked_flow", "token_id")
