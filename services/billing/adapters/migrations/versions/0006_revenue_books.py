"""the books: revenue_transactions, revenue_lots, revenue_entries, reconcile_runs, reconcile_mismatches

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "revenue_transactions",
        sa.Column("transaction_id", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.String(length=128), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("source_or_reason", sa.String(length=32), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("purchased_connects", sa.BigInteger(), nullable=False),
        sa.Column("cents", sa.BigInteger(), nullable=False),
        sa.Column("reference", sa.String(length=256), nullable=False),
        sa.Column("balance_after", sa.BigInteger(), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("transaction_id"),
    )
    op.create_index("ix_revenue_transactions_account_time", "revenue_transactions",
                    ["account_id", "occurred_at", "sequence"], unique=False)
    op.create_table(
        "revenue_lots",
        sa.Column("lot_id", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.String(length=128), nullable=False),
        sa.Column("purchase_id", sa.String(length=128), nullable=False),
        sa.Column("connects_total", sa.BigInteger(), nullable=False),
        sa.Column("cents_total", sa.BigInteger(), nullable=False),
        sa.Column("connects_remaining", sa.BigInteger(), nullable=False),
        sa.Column("cents_remaining", sa.BigInteger(), nullable=False),
        sa.Column("returned", sa.Boolean(), nullable=False),
        sa.Column("transaction_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("lot_id"),
    )
    op.create_index("ix_revenue_lots_purchase", "revenue_lots", ["purchase_id"], unique=False)
    op.create_table(
        "revenue_entries",
        sa.Column("transaction_id", sa.String(length=64), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("account_id", sa.String(length=128), nullable=False),
        sa.Column("lot_id", sa.String(length=64), nullable=False),
        sa.Column("purchase_id", sa.String(length=128), nullable=False),
        sa.Column("product", sa.String(length=32), nullable=True),
        sa.Column("connects", sa.BigInteger(), nullable=False),
        sa.Column("cents", sa.BigInteger(), nullable=False),
        sa.Column("deferred_delta", sa.BigInteger(), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("transaction_id", "position", "kind"),
    )
    op.create_index("ix_revenue_entries_time", "revenue_entries", ["occurred_at"], unique=False)
    op.create_table(
        "reconcile_runs",
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("request_id", sa.String(length=128), nullable=True),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("accounts_checked", sa.BigInteger(), nullable=False),
        sa.Column("mismatch_count", sa.BigInteger(), nullable=False),
        sa.Column("response", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("run_id"),
        sa.UniqueConstraint("request_id"),
    )
    op.create_table(
        "reconcile_mismatches",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("account_id", sa.String(length=128), nullable=False),
        sa.Column("purchase_id", sa.String(length=128), nullable=False),
        sa.Column("billing_connects", sa.BigInteger(), nullable=False),
        sa.Column("ledger_connects", sa.BigInteger(), nullable=False),
        sa.Column("billing_cents", sa.BigInteger(), nullable=False),
        sa.Column("provider_cents", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_reconcile_mismatches_run_id", "reconcile_mismatches", ["run_id"], unique=False)


def downgrade() -> None:
    for table in ("reconcile_mismatches", "reconcile_runs", "revenue_entries", "revenue_lots",
                  "revenue_transactions"):
        op.drop_table(table)
