"""ads_auctions, ads_bids, ads_settlement_steps, ads_requests, ads_badges, ads_badge_charges, ads_badge_prices

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('ads_auctions',
    sa.Column('job_id', sa.String(length=128), nullable=False),
    sa.Column('placebo', sa.Boolean(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('opened_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('closes_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('closed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('close_reason', sa.String(length=16), nullable=True),
    sa.PrimaryKeyConstraint('job_id')
    )
    op.create_index('ix_ads_auctions_due', 'ads_auctions', ['closes_at'],
                    postgresql_where=sa.text("status = 'OPEN'"),
                    sqlite_where=sa.text("status = 'OPEN'"))

    op.create_table('ads_badge_charges',
    sa.Column('request_id', sa.String(length=160), nullable=False),
    sa.Column('badge_id', sa.String(length=64), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('freelancer_id', sa.String(length=128), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('due_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('weekly_price', sa.BigInteger(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('transaction_id', sa.String(length=64), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('done_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('request_id'),
    sa.UniqueConstraint('badge_id', 'seq', name='uq_ads_badge_charges_seq')
    )
    op.create_index('ix_ads_badge_charges_due', 'ads_badge_charges', ['next_attempt_at'],
                    postgresql_where=sa.text("status = 'PENDING'"),
                    sqlite_where=sa.text("status = 'PENDING'"))

    op.create_table('ads_badge_prices',
    sa.Column('category', sa.String(length=128), nullable=False),
    sa.Column('weekly_price', sa.BigInteger(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('category')
    )
    op.create_table('ads_badges',
    sa.Column('freelancer_id', sa.String(length=128), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('category', sa.String(length=128), nullable=False),
    sa.Column('badge_id', sa.String(length=64), nullable=False),
    sa.Column('weekly_max', sa.BigInteger(), nullable=False),
    sa.Column('weekly_price', sa.BigInteger(), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('stopped_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('stop_reason', sa.String(length=32), nullable=True),
    sa.Column('week_started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('charged_this_week', sa.BigInteger(), nullable=False),
    sa.Column('charges', sa.BigInteger(), nullable=False),
    sa.Column('last_charge_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('next_charge_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('freelancer_id')
    )
    op.create_index('ix_ads_badges_category', 'ads_badges', ['category'],
                    postgresql_where=sa.text("state = 'ACTIVE'"),
                    sqlite_where=sa.text("state = 'ACTIVE'"))
    op.create_index('ix_ads_badges_due', 'ads_badges', ['next_charge_at'],
                    postgresql_where=sa.text("state = 'ACTIVE'"),
                    sqlite_where=sa.text("state = 'ACTIVE'"))

    op.create_table('ads_bids',
    sa.Column('bid_id', sa.String(length=64), nullable=False),
    sa.Column('job_id', sa.String(length=128), nullable=False),
    sa.Column('proposal_id', sa.String(length=128), nullable=False),
    sa.Column('freelancer_id', sa.String(length=128), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('placed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('hold_id', sa.String(length=64), nullable=False),
    sa.Column('pending_amount', sa.BigInteger(), nullable=False),
    sa.Column('raises', sa.Integer(), nullable=False),
    sa.Column('committed', sa.Boolean(), nullable=False),
    sa.Column('exhausted', sa.Boolean(), nullable=False),
    sa.Column('opens', sa.Integer(), nullable=False),
    sa.Column('views', sa.Integer(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('request_id', sa.String(length=128), nullable=False),
    sa.CheckConstraint('amount > 0', name='ck_ads_bids_amount'),
    sa.PrimaryKeyConstraint('bid_id'),
    sa.UniqueConstraint('job_id', 'proposal_id', name='uq_ads_bids_job_proposal')
    )
    op.create_index('ix_ads_bids_pending', 'ads_bids', ['updated_at'],
                    postgresql_where=sa.text("state = 'PENDING' OR pending_amount > 0"),
                    sqlite_where=sa.text("state = 'PENDING' OR pending_amount > 0"))

    op.create_table('ads_requests',
    sa.Column('request_id', sa.String(length=128), nullable=False),
    sa.Column('method', sa.String(length=32), nullable=False),
    sa.Column('fingerprint', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('answer', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('request_id')
    )
    op.create_table('ads_settlement_steps',
    sa.Column('bid_id', sa.String(length=64), nullable=False),
    sa.Column('job_id', sa.String(length=128), nullable=False),
    sa.Column('proposal_id', sa.String(length=128), nullable=False),
    sa.Column('freelancer_id', sa.String(length=128), nullable=False),
    sa.Column('hold_id', sa.String(length=64), nullable=False),
    sa.Column('action', sa.String(length=16), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('outcome', sa.String(length=32), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('done_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.String(length=300), nullable=True),
    sa.PrimaryKeyConstraint('bid_id')
    )
    op.create_index('ix_ads_steps_due', 'ads_settlement_steps', ['next_attempt_at'],
                    postgresql_where=sa.text("status = 'PENDING'"),
                    sqlite_where=sa.text("status = 'PENDING'"))
    op.create_index('ix_ads_steps_job', 'ads_settlement_steps', ['job_id'])


def downgrade() -> None:
    for table in ("ads_settlement_steps", "ads_requests", "ads_bids", "ads_badges", "ads_badge_prices",
                  "ads_badge_charges", "ads_auctions"):
        op.drop_table(table)
