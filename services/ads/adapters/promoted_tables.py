"""Promoted profiles' tables (SQLAlchemy Core) and their migrations. PostgreSQL and SQLite.

- `promoted_campaigns`: one row per campaign; `revision` grows with each change, `changed_at` (database
  time) is what replicas poll to keep their in-memory index current.
- `promoted_budget_days`: a campaign's spend on one UTC day. A click reserves its price here atomically
  (`UPDATE ... SET spent = spent + price WHERE spent < budget RETURNING`) in the transaction that records
  the click: the one guard every replica goes through, never a counter updated later.
- `promoted_clicks`: one row per charged or refused click, unique by `click_key` (the placement token id
  while de-duplication is on): a token charges once whichever replica gets the click.
- `promoted_requests`: request_id -> fingerprint and stored answer (AIP-155 idempotency).

Created by ads' Alembic revision 0002_promoted_profiles (services/ads/adapters/migrations).
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()
ID = sa.String(128)
TS = sa.DateTime(timezone=True)

campaigns = sa.Table(
    "promoted_campaigns", metadata,
    sa.Column("campaign_id", ID, primary_key=True),
    sa.Column("freelancer_id", ID, nullable=False),
    sa.Column("category", sa.String(64), nullable=False),
    sa.Column("max_cpc", sa.BigInteger, nullable=False),
    sa.Column("daily_budget", sa.BigInteger, nullable=False),
    sa.Column("quality_bps", sa.Integer, nullable=False),
    sa.Column("frequency_cap", sa.Integer, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("revision", sa.BigInteger, nullable=False),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("updated_at", TS, nullable=False),
    sa.Column("changed_at", TS, nullable=False, server_default=sa.func.now()),
    sa.CheckConstraint("max_cpc > 0 AND daily_budget >= max_cpc AND quality_bps > 0 AND frequency_cap > 0",
                       name="ck_promoted_campaigns_money"),
)
sa.Index("ix_promoted_campaigns_freelancer", campaigns.c.freelancer_id, campaigns.c.created_at,
         campaigns.c.campaign_id)
sa.Index("ix_promoted_campaigns_changed", campaigns.c.changed_at)

budget_days = sa.Table(
    "promoted_budget_days", metadata,
    sa.Column("campaign_id", ID, primary_key=True),
    sa.Column("day", sa.Date, primary_key=True),
    sa.Column("budget", sa.BigInteger, nullable=False),
    sa.Column("spent", sa.BigInteger, nullable=False),
    sa.Column("stopped", sa.Boolean, nullable=False),
    sa.Column("changed_at", TS, nullable=False, server_default=sa.func.now()),
    sa.CheckConstraint("spent >= 0", name="ck_promoted_budget_days_spent"),
)
sa.Index("ix_promoted_budget_days_changed", budget_days.c.changed_at)

clicks = sa.Table(
    "promoted_clicks", metadata,
    sa.Column("click_key", ID, primary_key=True),
    sa.Column("token_id", sa.String(64), nullable=False),
    sa.Column("request_id", ID, nullable=False),
    sa.Column("request_fingerprint", sa.String(64), nullable=False),
    sa.Column("campaign_id", ID, nullable=False),
    sa.Column("freelancer_id", ID, nullable=False),
    sa.Column("category", sa.String(64), nullable=False),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("price", sa.BigInteger, nullable=False),
    sa.Column("day", sa.Date, nullable=False),
    sa.Column("outcome", sa.String(32), nullable=False),
    sa.Column("transaction_id", sa.String(128), nullable=False),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("updated_at", TS, nullable=False),
)
_pending = clicks.c.outcome == "PENDING"
sa.Index("ix_promoted_clicks_pending", clicks.c.created_at, postgresql_where=_pending, sqlite_where=_pending)

requests = sa.Table(
    "promoted_requests", metadata,
    sa.Column("request_id", ID, primary_key=True),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("answer", sa.LargeBinary, nullable=False),
    sa.Column("created_at", TS, nullable=False),
)

