"""promoted profiles: campaigns, budget days, clicks, request ids (services/ads/adapters/promoted_tables.py)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

ID = sa.String(length=128)
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "promoted_campaigns",
        sa.Column("campaign_id", ID, nullable=False),
        sa.Column("freelancer_id", ID, nullable=False),
        sa.Column("category", sa.String(length=64), nullable=False),
        sa.Column("max_cpc", sa.BigInteger(), nullable=False),
        sa.Column("daily_budget", sa.BigInteger(), nullable=False),
        sa.Column("quality_bps", sa.Integer(), nullable=False),
        sa.Column("frequency_cap", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("revision", sa.BigInteger(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("changed_at", TS, server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint("max_cpc > 0 AND daily_budget >= max_cpc AND quality_bps > 0 AND frequency_cap > 0",
                           name="ck_promoted_campaigns_money"),
        sa.PrimaryKeyConstraint("campaign_id"),
    )
    op.create_index("ix_promoted_campaigns_changed", "promoted_campaigns", ["changed_at"])
    op.create_index("ix_promoted_campaigns_freelancer", "promoted_campaigns",
                    ["freelancer_id", "created_at", "campaign_id"])
    op.create_table(
        "promoted_budget_days",
        sa.Column("campaign_id", ID, nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("budget", sa.BigInteger(), nullable=False),
        sa.Column("spent", sa.BigInteger(), nullable=False),
        sa.Column("stopped", sa.Boolean(), nullable=False),
        sa.Column("changed_at", TS, server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint("spent >= 0", name="ck_promoted_budget_days_spent"),
        sa.PrimaryKeyConstraint("campaign_id", "day"),
    )
    op.create_index("ix_promoted_budget_days_changed", "promoted_budget_days", ["changed_at"])
    op.create_table(
        "promoted_clicks",
        sa.Column("click_key", ID, nullable=False),
        sa.Column("token_id", sa.String(length=64), nullable=False),
        sa.Column("request_id", ID, nullable=False),
        sa.Column("request_fingerprint", sa.String(length=64), nullable=False),
        sa.Column("campaign_id", ID, nullable=False),
        sa.Column("freelancer_id", ID, nullable=False),
        sa.Column("category", sa.String(length=64), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("price", sa.BigInteger(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("transaction_id", sa.String(length=128), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("click_key"),
    )
    pending = sa.text("outcome = 'PENDING'")
    op.create_index("ix_promoted_clicks_pending", "promoted_clicks", ["created_at"], postgresql_where=pending,
                    sqlite_where=pending)
    op.create_table(
        "promoted_requests",
        sa.Column("request_id", ID, nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("answer", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("request_id"),
    )


def downgrade() -> None:
    for table in ("promoted_requests", "promoted_clicks", "promoted_budget_days", "promoted_campaigns"):
        op.drop_table(table)
