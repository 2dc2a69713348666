"""Billing's tables (SQLAlchemy Core)."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

# Billing's copy of every Connects ledger transaction it has consumed, exactly
# once per transaction (the primary key), for revenue and reconciliation.
ledger_transactions = sa.Table(
    "ledger_transactions",
    metadata,
    sa.Column("transaction_id", sa.String(64), primary_key=True),
    sa.Column("event_id", sa.String(64), nullable=False, unique=True),
    sa.Column("account_id", sa.String(128), nullable=False, index=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("source_or_reason", sa.String(32), nullable=False),
    sa.Column("purchased_amount", sa.BigInteger, nullable=False),
    sa.Column("reference", sa.String(256), nullable=False),
    sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("recorded_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
)
