"""wallets, lots, holds, the journal (transactions, postings, lot movements), idempotency keys

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
        "holds",
        sa.Column("hold_id", sa.String(length=32), nullable=False),
        sa.Column("account_id", sa.String(length=128), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("captured", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("reference", sa.String(length=256), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("allocations", sa.Text(), nullable=False),
        sa.CheckConstraint("amount > 0 AND captured >= 0 AND captured <= amount", name="ck_holds_amounts"),
        sa.PrimaryKeyConstraint("hold_id"),
    )
    open_ = sa.text("status = 'OPEN'")
    op.create_index("ix_holds_open_expiry", "holds", ["expires_at"], unique=False,
                    postgresql_where=open_, sqlite_where=open_)
    op.create_table(
        "idempotency_keys",
        sa.Column("request_id", sa.String(length=128), nullable=False),
        sa.Column("method", sa.String(length=32), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("response", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("request_id"),
    )
    op.create_table(
        "ledger_transactions",
        sa.Column("transaction_id", sa.String(length=32), nullable=False),
        sa.Column("account_id", sa.String(length=128), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=True),
        sa.Column("spend_reason", sa.String(length=32), nullable=True),
        sa.Column("return_reason", sa.String(length=48), nullable=True),
        sa.Column("reference", sa.String(length=256), nullable=False),
        sa.Column("job_id", sa.String(length=256), nullable=True),
        sa.Column("hold_id", sa.String(length=32), nullable=True),
        sa.Column("returned_transaction_id", sa.String(length=32), nullable=True),
        sa.Column("available_after", sa.BigInteger(), nullable=False),
        sa.Column("held_after", sa.BigInteger(), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("amount > 0", name="ck_ledger_transactions_amount"),
        sa.PrimaryKeyConstraint("transaction_id"),
        sa.UniqueConstraint("account_id", "sequence", name="uq_ledger_transactions_account_sequence"),
        sa.UniqueConstraint("returned_transaction_id"),
    )
    has_job = sa.text("job_id IS NOT NULL")
    op.create_index("ix_ledger_transactions_job", "ledger_transactions", ["job_id"], unique=False,
                    postgresql_where=has_job, sqlite_where=has_job)
    op.create_table(
        "lot_movements",
        sa.Column("transaction_id", sa.String(length=32), nullable=False),
        sa.Column("lot_id", sa.String(length=32), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("origin_source", sa.String(length=16), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("transaction_id", "lot_id"),
    )
    op.create_table(
        "lots",
        sa.Column("lot_id", sa.String(length=32), nullable=False),
        sa.Column("account_id", sa.String(length=128), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("origin_source", sa.String(length=16), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("remaining", sa.BigInteger(), nullable=False),
        sa.Column("held", sa.BigInteger(), nullable=False),
        sa.Column("expired", sa.BigInteger(), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("amount > 0 AND remaining >= 0 AND held >= 0 AND expired >= 0", name="ck_lots_amounts"),
        sa.CheckConstraint("remaining + held + expired <= amount", name="ck_lots_conserved"),
        sa.PrimaryKeyConstraint("lot_id"),
    )
    due = sa.text("remaining > 0")
    live = sa.text("remaining > 0 OR held > 0")
    op.create_index("ix_lots_due", "lots", ["expires_at"], unique=False, postgresql_where=due, sqlite_where=due)
    op.create_index("ix_lots_live", "lots", ["account_id"], unique=False, postgresql_where=live, sqlite_where=live)
    op.create_table(
        "postings",
        sa.Column("transaction_id", sa.String(length=32), nullable=False),
        sa.Column("ledger_account", sa.String(length=160), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("transaction_id", "ledger_account"),
    )
    op.create_table(
        "wallets",
        sa.Column("account_id", sa.String(length=128), nullable=False),
        sa.Column("available", sa.BigInteger(), nullable=False),
        sa.Column("held", sa.BigInteger(), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("available >= 0", name="ck_wallets_available"),
        sa.CheckConstraint("held >= 0", name="ck_wallets_held"),
        sa.PrimaryKeyConstraint("account_id"),
    )


def downgrade() -> None:
    for table in ("wallets", "postings", "lots", "lot_movements", "ledger_transactions", "idempotency_keys", "holds"):
        op.drop_table(table)
