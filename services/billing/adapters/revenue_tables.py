"""The books' tables: billing's copy of the ledger, deferred revenue per lot, the revenue journal, reconciliation.

Created by billing's Alembic revision `0006_revenue_books` (the frozen DDL);
`metadata` is listed in billing's `MIGRATIONS` target metadata.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

_big = sa.BigInteger().with_variant(sa.Integer, "sqlite")

# Every ledger transaction billing consumed, once (the primary key): what statements are made of.
revenue_transactions = sa.Table(
    "revenue_transactions", metadata,
    sa.Column("transaction_id", sa.String(64), primary_key=True),
    sa.Column("account_id", sa.String(128), nullable=False),
    sa.Column("sequence", sa.BigInteger, nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("source_or_reason", sa.String(32), nullable=False),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("purchased_connects", sa.BigInteger, nullable=False),
    # CREDIT(PURCHASE): the cash deferred; REVERSE_CREDIT: the cash taken back; else 0.
    sa.Column("cents", sa.BigInteger, nullable=False),
    sa.Column("reference", sa.String(256), nullable=False),
    sa.Column("balance_after", sa.BigInteger, nullable=False),
    sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_revenue_transactions_account_time", "account_id", "occurred_at", "sequence"),
)

# Deferred revenue left in each lot of purchased Connects (free lots are not kept).
revenue_lots = sa.Table(
    "revenue_lots", metadata,
    sa.Column("lot_id", sa.String(64), primary_key=True),
    sa.Column("account_id", sa.String(128), nullable=False),
    sa.Column("purchase_id", sa.String(128), nullable=False),
    sa.Column("connects_total", sa.BigInteger, nullable=False),
    sa.Column("cents_total", sa.BigInteger, nullable=False),
    sa.Column("connects_remaining", sa.BigInteger, nullable=False),
    sa.Column("cents_remaining", sa.BigInteger, nullable=False),
    sa.Column("returned", sa.Boolean, nullable=False),
    sa.Column("transaction_id", sa.String(64), nullable=False),  # the CREDIT (or RETURN) that made it
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_revenue_lots_purchase", "purchase_id"),
)

# The revenue journal: one row per (transaction, lot movement, kind); the key is the second de-duplication.
revenue_entries = sa.Table(
    "revenue_entries", metadata,
    sa.Column("transaction_id", sa.String(64), primary_key=True),
    sa.Column("position", sa.Integer, primary_key=True),
    sa.Column("kind", sa.String(16), primary_key=True),
    sa.Column("account_id", sa.String(128), nullable=False),
    sa.Column("lot_id", sa.String(64), nullable=False),
    sa.Column("purchase_id", sa.String(128), nullable=False),
    sa.Column("product", sa.String(32), nullable=True),
    sa.Column("connects", sa.BigInteger, nullable=False),
    sa.Column("cents", sa.BigInteger, nullable=False),
    sa.Column("deferred_delta", sa.BigInteger, nullable=False),
    sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_revenue_entries_time", "occurred_at"),
)

# One row per reconciliation run; request_id makes Reconcile retries return the same run.
reconcile_runs = sa.Table(
    "reconcile_runs", metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("request_id", sa.String(128), nullable=True, unique=True),
    sa.Column("checked_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("accounts_checked", sa.BigInteger, nullable=False),
    sa.Column("mismatch_count", sa.BigInteger, nullable=False),
    sa.Column("response", sa.LargeBinary, nullable=False),  # the ReconcileResponse, serialised
)

reconcile_mismatches = sa.Table(
    "reconcile_mismatches", metadata,
    sa.Column("id", _big, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(64), nullable=False, index=True),
    sa.Column("kind", sa.String(40), nullable=False),
    sa.Column("account_id", sa.String(128), nullable=False),
    sa.Column("purchase_id", sa.String(128), nullable=False),
    sa.Column("billing_connects", sa.BigInteger, nullable=False),
    sa.Column("ledger_connects", sa.BigInteger, nullable=False),
    sa.Column("billing_cents", sa.BigInteger, nullable=False),
    sa.Column("provider_cents", sa.BigInteger, nullable=False),
)
