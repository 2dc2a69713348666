"""The ledger's tables (SQLAlchemy Core); their migrations are in adapters/migrations. PostgreSQL and SQLite.

Balances of system accounts are never stored: they are sums over `postings`,
which are only ever inserted, so no write serialises on a system row. The
only per-account hot row is `wallets`, locked FOR UPDATE by each transaction.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()
ID = sa.String(128)
TS = sa.DateTime(timezone=True)

wallets = sa.Table(
    "wallets", metadata,
    sa.Column("account_id", ID, primary_key=True),
    sa.Column("available", sa.BigInteger, nullable=False),
    sa.Column("held", sa.BigInteger, nullable=False),
    sa.Column("sequence", sa.BigInteger, nullable=False),
    sa.Column("updated_at", TS, nullable=False),
    sa.CheckConstraint("available >= 0", name="ck_wallets_available"),
    sa.CheckConstraint("held >= 0", name="ck_wallets_held"),
)

lots = sa.Table(
    "lots", metadata,
    sa.Column("lot_id", sa.String(32), primary_key=True),
    sa.Column("account_id", ID, nullable=False),
    sa.Column("source", sa.String(16), nullable=False),
    sa.Column("origin_source", sa.String(16), nullable=False),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("remaining", sa.BigInteger, nullable=False),
    sa.Column("held", sa.BigInteger, nullable=False),
    sa.Column("expired", sa.BigInteger, nullable=False),
    sa.Column("issued_at", TS, nullable=False),
    sa.Column("expires_at", TS, nullable=False),
    sa.CheckConstraint("amount > 0 AND remaining >= 0 AND held >= 0 AND expired >= 0", name="ck_lots_amounts"),
    sa.CheckConstraint("remaining + held + expired <= amount", name="ck_lots_conserved"),
)
_live = sa.or_(lots.c.remaining > 0, lots.c.held > 0)
sa.Index("ix_lots_live", lots.c.account_id, postgresql_where=_live, sqlite_where=_live)
sa.Index("ix_lots_due", lots.c.expires_at, postgresql_where=lots.c.remaining > 0,
         sqlite_where=lots.c.remaining > 0)

holds = sa.Table(
    "holds", metadata,
    sa.Column("hold_id", sa.String(32), primary_key=True),
    sa.Column("account_id", ID, nullable=False),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("captured", sa.BigInteger, nullable=False),
    sa.Column("reason", sa.String(32), nullable=False),
    sa.Column("reference", sa.String(256), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("expires_at", TS, nullable=False),
    sa.Column("resolved_at", TS, nullable=True),
    sa.Column("allocations", sa.Text, nullable=False),
    sa.CheckConstraint("amount > 0 AND captured >= 0 AND captured <= amount", name="ck_holds_amounts"),
)
_open = holds.c.status == "OPEN"
sa.Index("ix_holds_open_expiry", holds.c.expires_at, postgresql_where=_open, sqlite_where=_open)

transactions = sa.Table(
    "ledger_transactions", metadata,
    sa.Column("transaction_id", sa.String(32), primary_key=True),
    sa.Column("account_id", ID, nullable=False),
    sa.Column("sequence", sa.BigInteger, nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("source", sa.String(16), nullable=True),
    sa.Column("spend_reason", sa.String(32), nullable=True),
    sa.Column("return_reason", sa.String(48), nullable=True),
    sa.Column("reference", sa.String(256), nullable=False),
    sa.Column("job_id", sa.String(256), nullable=True),
    sa.Column("hold_id", sa.String(32), nullable=True),
    # Unique: a transaction is returned at most once, whatever the application does.
    sa.Column("returned_transaction_id", sa.String(32), nullable=True, unique=True),
    sa.Column("available_after", sa.BigInteger, nullable=False),
    sa.Column("held_after", sa.BigInteger, nullable=False),
    sa.Column("occurred_at", TS, nullable=False),
    sa.UniqueConstraint("account_id", "sequence", name="uq_ledger_transactions_account_sequence"),
    sa.CheckConstraint("amount > 0", name="ck_ledger_transactions_amount"),
)
_job = transactions.c.job_id.is_not(None)
sa.Index("ix_ledger_transactions_job", transactions.c.job_id, postgresql_where=_job, sqlite_where=_job)

postings = sa.Table(
    "postings", metadata,
    sa.Column("transaction_id", sa.String(32), primary_key=True),
    sa.Column("ledger_account", sa.String(160), primary_key=True),
    sa.Column("amount", sa.BigInteger, nullable=False),
)

lot_movements = sa.Table(
    "lot_movements", metadata,
    sa.Column("transaction_id", sa.String(32), primary_key=True),
    sa.Column("lot_id", sa.String(32), primary_key=True),
    sa.Column("source", sa.String(16), nullable=False),
    sa.Column("origin_source", sa.String(16), nullable=False),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("expires_at", TS, nullable=False),
)

requests = sa.Table(
    "idempotency_keys", metadata,
    sa.Column("request_id", ID, primary_key=True),
    sa.Column("method", sa.String(32), nullable=False),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("response", sa.LargeBinary, nullable=False),
    sa.Column("created_at", TS, nullable=False),
)
