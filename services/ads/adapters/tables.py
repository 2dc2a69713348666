"""Ads' auction and badge tables (SQLAlchemy Core) and their migrations. PostgreSQL and SQLite.

One row per auction, bid, settlement step, badge and badge charge. The unique keys carry the money
safety: one bid per (job, proposal), one settlement step per bid, one charge per (badge run, seq); the
ledger request ids are derived from those keys, so nothing can be held, captured or charged twice.
The schema is created by the Alembic revisions in adapters/migrations/versions (frozen DDL).
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()
ID = sa.String(128)
TS = sa.DateTime(timezone=True)

auctions = sa.Table(
    "ads_auctions", metadata,
    sa.Column("job_id", ID, primary_key=True),
    sa.Column("placebo", sa.Boolean, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("opened_at", TS, nullable=False),
    sa.Column("closes_at", TS, nullable=False),
    sa.Column("closed_at", TS, nullable=True),
    sa.Column("close_reason", sa.String(16), nullable=True),
)
_open = auctions.c.status == "OPEN"
sa.Index("ix_ads_auctions_due", auctions.c.closes_at, postgresql_where=_open, sqlite_where=_open)

bids = sa.Table(
    "ads_bids", metadata,
    sa.Column("bid_id", sa.String(64), primary_key=True),
    sa.Column("job_id", ID, nullable=False),
    sa.Column("proposal_id", ID, nullable=False),
    sa.Column("freelancer_id", ID, nullable=False),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("placed_at", TS, nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("hold_id", sa.String(64), nullable=False),
    sa.Column("pending_amount", sa.BigInteger, nullable=False),
    sa.Column("raises", sa.Integer, nullable=False),
    sa.Column("committed", sa.Boolean, nullable=False),
    sa.Column("exhausted", sa.Boolean, nullable=False),
    sa.Column("opens", sa.Integer, nullable=False),
    sa.Column("views", sa.Integer, nullable=False),
    sa.Column("updated_at", TS, nullable=False),
    sa.Column("request_id", sa.String(128), nullable=False),
    sa.UniqueConstraint("job_id", "proposal_id", name="uq_ads_bids_job_proposal"),
    sa.CheckConstraint("amount > 0", name="ck_ads_bids_amount"),
)
_pending = sa.or_(bids.c.state == "PENDING", bids.c.pending_amount > 0)
sa.Index("ix_ads_bids_pending", bids.c.updated_at, postgresql_where=_pending, sqlite_where=_pending)

steps = sa.Table(
    "ads_settlement_steps", metadata,
    sa.Column("bid_id", sa.String(64), primary_key=True),  # one step per bid
    sa.Column("job_id", ID, nullable=False),
    sa.Column("proposal_id", ID, nullable=False),
    sa.Column("freelancer_id", ID, nullable=False),
    sa.Column("hold_id", sa.String(64), nullable=False),
    sa.Column("action", sa.String(16), nullable=False),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # PENDING, DONE
    sa.Column("outcome", sa.String(32), nullable=True),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("next_attempt_at", TS, nullable=False),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("done_at", TS, nullable=True),
    sa.Column("last_error", sa.String(300), nullable=True),
)
_step_pending = steps.c.status == "PENDING"
sa.Index("ix_ads_steps_due", steps.c.next_attempt_at, postgresql_where=_step_pending, sqlite_where=_step_pending)
sa.Index("ix_ads_steps_job", steps.c.job_id)

requests = sa.Table(
    "ads_requests", metadata,
    sa.Column("request_id", sa.String(128), primary_key=True),
    sa.Column("method", sa.String(32), nullable=False),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # PENDING (waiting for the ledger), DONE
    sa.Column("answer", sa.Text, nullable=True),
    sa.Column("created_at", TS, nullable=False),
)

badges = sa.Table(
    "ads_badges", metadata,
    sa.Column("freelancer_id", ID, primary_key=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("category", ID, nullable=False),
    sa.Column("badge_id", sa.String(64), nullable=False),
    sa.Column("weekly_max", sa.BigInteger, nullable=False),
    sa.Column("weekly_price", sa.BigInteger, nullable=False),
    sa.Column("started_at", TS, nullable=True),
    sa.Column("stopped_at", TS, nullable=True),
    sa.Column("stop_reason", sa.String(32), nullable=True),
    sa.Column("week_started_at", TS, nullable=True),
    sa.Column("charged_this_week", sa.BigInteger, nullable=False),
    sa.Column("charges", sa.BigInteger, nullable=False),
    sa.Column("last_charge_at", TS, nullable=True),
    sa.Column("next_charge_at", TS, nullable=True),
)
_active = badges.c.state == "ACTIVE"
sa.Index("ix_ads_badges_due", badges.c.next_charge_at, postgresql_where=_active, sqlite_where=_active)
sa.Index("ix_ads_badges_category", badges.c.category, postgresql_where=_active, sqlite_where=_active)

badge_charges = sa.Table(
    "ads_badge_charges", metadata,
    sa.Column("request_id", sa.String(160), primary_key=True),
    sa.Column("badge_id", sa.String(64), nullable=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("freelancer_id", ID, nullable=False),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("due_at", TS, nullable=False),
    sa.Column("weekly_price", sa.BigInteger, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # PENDING, DONE, FAILED
    sa.Column("transaction_id", sa.String(64), nullable=True),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("next_attempt_at", TS, nullable=False),
    sa.Column("done_at", TS, nullable=True),
    sa.UniqueConstraint("badge_id", "seq", name="uq_ads_badge_charges_seq"),
)
_charge_pending = badge_charges.c.status == "PENDING"
sa.Index("ix_ads_badge_charges_due", badge_charges.c.next_attempt_at, postgresql_where=_charge_pending,
         sqlite_where=_charge_pending)

badge_prices = sa.Table(
    "ads_badge_prices", metadata,
    sa.Column("category", ID, primary_key=True),
    sa.Column("weekly_price", sa.BigInteger, nullable=False),
    sa.Column("updated_at", TS, nullable=False),
)


# Talent searches per category and UTC hour (GetPlacements calls), summed over every replica: the demand
# input of the badge's weekly price. Each replica counts in memory and adds its counts here in one upsert
# every few seconds (adapters/searches.py), so serving writes nothing per request.
search_counts = sa.Table(
    "ads_search_counts", metadata,
    sa.Column("category", ID, primary_key=True),
    sa.Column("hour", TS, primary_key=True),
    sa.Column("searches", sa.BigInteger, nullable=False),
    sa.CheckConstraint("searches >= 0", name="ck_ads_search_counts_searches"),
)
