"""Initial schema: recipients, grants, approvals, tokens, audit, state, flows, ledger.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "api_token",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_token")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_api_token_token_hash")),
    )
    op.create_table(
        "approval",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("entity_type", sa.String(length=32), nullable=False),
        sa.Column("entity_id", sa.String(length=100), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_approval")),
    )
    op.create_index(
        op.f("ix_approval_entity_type_entity_id"),
        "approval",
        ["entity_type", "entity_id"],
        unique=False,
    )

    op.create_table(
        "audit_event",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("entity_type", sa.String(length=32), nullable=False),
        sa.Column("entity_id", sa.String(length=100), nullable=False),
        sa.Column("before", sa.JSON(), nullable=True),
        sa.Column("after", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_event")),
    )
    op.create_index(op.f("ix_audit_event_actor"), "audit_event", ["actor"], unique=False)
    op.create_index(
        op.f("ix_audit_event_entity_type_entity_id"),
        "audit_event",
        ["entity_type", "entity_id"],
        unique=False,
    )
    op.create_index(op.f("ix_audit_event_time"), "audit_event", ["time"], unique=False)

    op.create_table(
        "blocked_flow",
        sa.Column("decision_id", sa.String(length=64), nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("would_block", sa.Boolean(), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("recipient_id", sa.String(length=63), nullable=True),
        sa.Column("host", sa.String(length=260), nullable=False),
        sa.Column("method", sa.String(length=16), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("purpose", sa.String(length=64), nullable=True),
        sa.Column("categories", sa.JSON(), nullable=False),
        sa.Column("reason_codes", sa.JSON(), nullable=False),
        sa.Column("source_workload", sa.String(length=200), nullable=True),
        sa.Column("source_namespace", sa.String(length=200), nullable=True),
        sa.Column("findings", sa.JSON(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("proxy_id", sa.String(length=200), nullable=True),
        sa.Column("triage_state", sa.String(length=16), nullable=False),
        sa.Column("triage_note", sa.Text(), nullable=True),
        sa.Column("triaged_by", sa.String(length=200), nullable=True),
        sa.Column("triaged_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("decision_id", name=op.f("pk_blocked_flow")),
    )
    op.create_index(
        op.f("ix_blocked_flow_recipient_id_time"),
        "blocked_flow",
        ["recipient_id", "time"],
        unique=False,
    )
    op.create_index(
        op.f("ix_blocked_flow_source_workload_time"),
        "blocked_flow",
        ["source_workload", "time"],
        unique=False,
    )
    op.create_index(op.f("ix_blocked_flow_time"), "blocked_flow", ["time"], unique=False)
    op.create_index(
        op.f("ix_blocked_flow_triage_state_time"),
        "blocked_flow",
        ["triage_state", "time"],
        unique=False,
    )

    op.create_table(
        "ledger_entry",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("minute", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source_workload", sa.String(length=200), nullable=False),
        sa.Column("source_namespace", sa.String(length=200), nullable=False),
        sa.Column("recipient_id", sa.String(length=63), nullable=False),
        sa.Column("purpose", sa.String(length=64), nullable=False),
        sa.Column("category", sa.String(length=64), nullable=False),
        sa.Column("proxy_id", sa.String(length=200), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_entry")),
        sa.UniqueConstraint(
            "proxy_id",
            "minute",
            "source_workload",
            "source_namespace",
            "recipient_id",
            "purpose",
            "category",
            name="uq_ledger_entry_key",
        ),
    )
    op.create_index(op.f("ix_ledger_entry_minute"), "ledger_entry", ["minute"], unique=False)
    op.create_index(
        op.f("ix_ledger_entry_recipient_id_minute"),
        "ledger_entry",
        ["recipient_id", "minute"],
        unique=False,
    )

    op.create_table(
        "recipient",
        sa.Column("id", sa.String(length=63), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("regions", sa.JSON(), nullable=False),
        sa.Column("tls_origination", sa.Boolean(), nullable=False),
        sa.Column("inspect_tls", sa.Boolean(), nullable=False),
        sa.Column("owner_team", sa.String(length=200), nullable=True),
        sa.Column("contract_ref", sa.String(length=200), nullable=True),
        sa.Column("notes", sa.Text(), nullable=True),
        sa.Column("proposed_by", sa.String(length=200), nullable=False),
        sa.Column("updated_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recipient")),
    )
    op.create_index(op.f("ix_recipient_status"), "recipient", ["status"], unique=False)

    op.create_table(
        "registry_state",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_registry_state")),
    )
    # The single state row; the snapshot version starts at 0 and only ever goes up.
    op.bulk_insert(
        sa.table(
            "registry_state",
            sa.column("id", sa.Integer()),
            sa.column("version", sa.Integer()),
            sa.column("updated_at", sa.DateTime(timezone=True)),
        ),
        [{"id": 1, "version": 0, "updated_at": datetime.now(UTC)}],
    )
    op.create_table(
        "flow_category",
        sa.Column("decision_id", sa.String(length=64), nullable=False),
        sa.Column("category", sa.String(length=64), nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["decision_id"],
            ["blocked_flow.decision_id"],
            name=op.f("fk_flow_category_decision_id_blocked_flow"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("decision_id", "category", name=op.f("pk_flow_category")),
    )
    op.create_index(
        op.f("ix_flow_category_category_time"), "flow_category", ["category", "time"], unique=False
    )

    op.create_table(
        "flow_reason",
        sa.Column("decision_id", sa.String(length=64), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["decision_id"],
            ["blocked_flow.decision_id"],
            name=op.f("fk_flow_reason_decision_id_blocked_flow"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("decision_id", "code", name=op.f("pk_flow_reason")),
    )
    op.create_index(op.f("ix_flow_reason_code_time"), "flow_reason", ["code", "time"], unique=False)

    op.create_table(
        "grant",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("recipient_id", sa.String(length=63), nullable=False),
        sa.Column("purpose", sa.String(length=64), nullable=False),
        sa.Column("categories", sa.JSON(), nullable=False),
        sa.Column("legal_basis", sa.String(length=64), nullable=True),
        sa.Column("expires", sa.Date(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("proposed_by", sa.String(length=200), nullable=False),
        sa.Column("approved_by", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["recipient_id"],
            ["recipient.id"],
            name=op.f("fk_grant_recipient_id_recipient"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_grant")),
    )
    op.create_index(op.f("ix_grant_recipient_id"), "grant", ["recipient_id"], unique=False)

    op.create_table(
        "recipient_host",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("recipient_id", sa.String(length=63), nullable=False),
        sa.Column("pattern", sa.String(length=260), nullable=False),
        sa.ForeignKeyConstraint(
            ["recipient_id"],
            ["recipient.id"],
            name=op.f("fk_recipient_host_recipient_id_recipient"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recipient_host")),
        sa.UniqueConstraint("pattern", name=op.f("uq_recipient_host_pattern")),
    )
    op.create_index(
        op.f("ix_recipient_host_recipient_id"), "recipient_host", ["recipient_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_recipient_host_recipient_id"), table_name="recipient_host")

    op.drop_table("recipient_host")
    op.drop_index(op.f("ix_grant_recipient_id"), table_name="grant")

    op.drop_table("grant")
    op.drop_index(op.f("ix_flow_reason_code_time"), table_name="flow_reason")

    op.drop_table("flow_reason")
    op.drop_index(op.f("ix_flow_category_category_time"), table_name="flow_category")

    op.drop_table("flow_category")
    op.drop_table("registry_state")
    op.drop_index(op.f("ix_recipient_status"), table_name="recipient")

    op.drop_table("recipient")
    op.drop_index(op.f("ix_ledger_entry_recipient_id_minute"), table_name="ledger_entry")
    op.drop_index(op.f("ix_ledger_entry_minute"), table_name="ledger_entry")

    op.drop_table("ledger_entry")
    op.drop_index(op.f("ix_blocked_flow_triage_state_time"), table_name="blocked_flow")
    op.drop_index(op.f("ix_blocked_flow_time"), table_name="blocked_flow")
    op.drop_index(op.f("ix_blocked_flow_source_workload_time"), table_name="blocked_flow")
    op.drop_index(op.f("ix_blocked_flow_recipient_id_time"), table_name="blocked_flow")

    op.drop_table("blocked_flow")
    op.drop_index(op.f("ix_audit_event_time"), table_name="audit_event")
    op.drop_index(op.f("ix_audit_event_entity_type_entity_id"), table_name="audit_event")
    op.drop_index(op.f("ix_audit_event_actor"), table_name="audit_event")

    op.drop_table("audit_event")
    op.drop_index(op.f("ix_approval_entity_type_entity_id"), table_name="approval")

    op.drop_table("approval")
    op.drop_table("api_token")
