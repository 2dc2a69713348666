"""ledger_transactions: billing's copy of every Connects ledger transaction it consumed

Revision ID: 0001
Revises:
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ledger_transactions",
        sa.Column("transaction_id", sa.String(length=64), nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("source_or_reason", sa.String(length=32), nullable=False),
        sa.Column("purchased_amount", sa.BigInteger(), nullable=False),
        sa.Column("reference", sa.String(length=256), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("transaction_id"),
        sa.UniqueConstraint("event_id"),
    )
    op.create_index("ix_ledger_transactions_account_id", "ledger_transactions", ["account_id"], unique=False)


def downgrade() -> None:
    op.drop_table("ledger_transactions")
