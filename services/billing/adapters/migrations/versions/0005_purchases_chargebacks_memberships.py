"""Purchases, chargebacks, memberships and their cycles, membership requests, provider webhook events.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 17:44:53.388860
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

PENDING = sa.text("state = 'PENDING'")
GRANTING = sa.text("state != 'FAILED'")  # a FAILED start may be asked again


def upgrade() -> None:
    op.create_table('membership_cycles',
    sa.Column('grant_id', sa.String(length=32), nullable=False),
    sa.Column('membership_id', sa.String(length=32), nullable=False),
    sa.Column('cycle', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('account_id', sa.String(length=128), nullable=False),
    sa.Column('plan', sa.String(length=24), nullable=False),
    sa.Column('period_start', sa.DateTime(timezone=True), nullable=False),
    sa.Column('period_end', sa.DateTime(timezone=True), nullable=False),
    sa.Column('fee_cents', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('connects', sa.BigInteger(), nullable=False),
    sa.Column('payment_method', sa.String(length=128), nullable=False),
    sa.Column('request_id', sa.String(length=128), server_default='', nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('payment_status', sa.String(length=16), nullable=False),
    sa.Column('payment_intent_id', sa.String(length=64), nullable=True),
    sa.Column('payment_reference', sa.String(length=64), server_default='', nullable=False),
    sa.Column('payment_attempts', sa.Integer(), server_default='0', nullable=False),
    sa.Column('credit_transaction_id', sa.String(length=64), nullable=True),
    sa.Column('failure_reason', sa.String(length=64), server_default='', nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('paid_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('grant_id')
    )
    with op.batch_alter_table('membership_cycles', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_membership_cycles_account_id'), ['account_id'], unique=False)
        batch_op.create_index('ix_membership_cycles_pending', ['next_attempt_at'],
                              unique=False, postgresql_where=PENDING, sqlite_where=PENDING)
        batch_op.create_index('uq_membership_cycles_cycle', ['membership_id', 'cycle', 'kind'],
                              unique=True, postgresql_where=GRANTING, sqlite_where=GRANTING)
        batch_op.create_index('uq_membership_cycles_period', ['membership_id', 'period_start', 'kind'],
                              unique=True, postgresql_where=GRANTING, sqlite_where=GRANTING)

    op.create_table('membership_requests',
    sa.Column('request_id', sa.String(length=128), nullable=False),
    sa.Column('method', sa.String(length=32), nullable=False),
    sa.Column('fingerprint', sa.String(length=64), nullable=False),
    sa.Column('account_id', sa.String(length=128), nullable=False),
    sa.Column('response', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('request_id')
    )
    op.create_table('memberships',
    sa.Column('account_id', sa.String(length=128), nullable=False),
    sa.Column('membership_id', sa.String(length=32), nullable=False),
    sa.Column('plan', sa.String(length=24), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('fee_cents', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('monthly_connects', sa.BigInteger(), nullable=False),
    sa.Column('payment_method', sa.String(length=128), nullable=False),
    sa.Column('anchor', sa.DateTime(timezone=True), nullable=False),
    sa.Column('cycle', sa.Integer(), nullable=False),
    sa.Column('period_start', sa.DateTime(timezone=True), nullable=False),
    sa.Column('period_end', sa.DateTime(timezone=True), nullable=False),
    sa.Column('cancelled_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('account_id'),
    sa.UniqueConstraint('membership_id')
    )
    with op.batch_alter_table('memberships', schema=None) as batch_op:
        batch_op.create_index('ix_memberships_due', ['period_end'], unique=False)

    op.create_table('provider_events',
    sa.Column('event_id', sa.String(length=64), nullable=False),
    sa.Column('type', sa.String(length=64), nullable=False),
    sa.Column('object_id', sa.String(length=64), nullable=False),
    sa.Column('payload', sa.Text(), nullable=False),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('event_id')
    )
    with op.batch_alter_table('provider_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_provider_events_object_id'), ['object_id'], unique=False)

    op.create_table('purchases',
    sa.Column('purchase_id', sa.String(length=32), nullable=False),
    sa.Column('request_id', sa.String(length=128), nullable=False),
    sa.Column('fingerprint', sa.String(length=64), nullable=False),
    sa.Column('account_id', sa.String(length=128), nullable=False),
    sa.Column('bundle_id', sa.String(length=64), nullable=False),
    sa.Column('connects', sa.BigInteger(), nullable=False),
    sa.Column('amount_cents', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('payment_method', sa.String(length=128), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('payment_status', sa.String(length=16), nullable=False),
    sa.Column('payment_intent_id', sa.String(length=64), nullable=True),
    sa.Column('payment_reference', sa.String(length=64), server_default='', nullable=False),
    sa.Column('credit_request_id', sa.String(length=128), nullable=False),
    sa.Column('credit_transaction_id', sa.String(length=64), nullable=True),
    sa.Column('failure_reason', sa.String(length=64), server_default='', nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('captured_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('attempts', sa.Integer(), server_default='0', nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("state IN ('PENDING', 'COMPLETED', 'FAILED', 'CHARGED_BACK')", name='ck_purchases_state'),
    sa.CheckConstraint('connects > 0 AND amount_cents > 0', name='ck_purchases_amounts'),
    sa.PrimaryKeyConstraint('purchase_id'),
    sa.UniqueConstraint('credit_request_id'),
    sa.UniqueConstraint('credit_transaction_id'),
    sa.UniqueConstraint('payment_intent_id'),
    sa.UniqueConstraint('request_id')
    )
    with op.batch_alter_table('purchases', schema=None) as batch_op:
        batch_op.create_index('ix_purchases_account_created', ['account_id', sa.literal_column('created_at DESC'),
                                                                sa.literal_column('purchase_id DESC')], unique=False)
        batch_op.create_index('ix_purchases_finished', ['finished_at'], unique=False)
        batch_op.create_index('ix_purchases_pending', ['next_attempt_at'],
                              unique=False, postgresql_where=PENDING, sqlite_where=PENDING)

    op.create_table('chargebacks',
    sa.Column('chargeback_id', sa.String(length=32), nullable=False),
    sa.Column('request_id', sa.String(length=128), nullable=False),
    sa.Column('fingerprint', sa.String(length=64), nullable=False),
    sa.Column('purchase_id', sa.String(length=32), nullable=False),
    sa.Column('account_id', sa.String(length=128), nullable=False),
    sa.Column('amount_cents', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('connects', sa.BigInteger(), nullable=False),
    sa.Column('credit_transaction_id', sa.String(length=64), nullable=False),
    sa.Column('connects_removed', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('connects_already_spent', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('loss_cents', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('provider_reference', sa.String(length=128), nullable=False),
    sa.Column('reason', sa.String(length=256), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('reversal_transaction_id', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('recorded_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('attempts', sa.Integer(), server_default='0', nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['purchase_id'], ['purchases.purchase_id'], ),
    sa.PrimaryKeyConstraint('chargeback_id'),
    sa.UniqueConstraint('purchase_id'),
    sa.UniqueConstraint('request_id')
    )
    with op.batch_alter_table('chargebacks', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_chargebacks_account_id'), ['account_id'], unique=False)
        batch_op.create_index('ix_chargebacks_recorded', ['recorded_at'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('chargebacks', schema=None) as batch_op:
        batch_op.drop_index('ix_chargebacks_recorded')
        batch_op.drop_index(batch_op.f('ix_chargebacks_account_id'))

    op.drop_table('chargebacks')
    with op.batch_alter_table('purchases', schema=None) as batch_op:
        batch_op.drop_index('ix_purchases_pending')
        batch_op.drop_index('ix_purchases_finished')
        batch_op.drop_index('ix_purchases_account_created')

    op.drop_table('purchases')
    with op.batch_alter_table('provider_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_provider_events_object_id'))

    op.drop_table('provider_events')
    with op.batch_alter_table('memberships', schema=None) as batch_op:
        batch_op.drop_index('ix_memberships_due')

    op.drop_table('memberships')
    op.drop_table('membership_requests')
    with op.batch_alter_table('membership_cycles', schema=None) as batch_op:
        batch_op.drop_index('uq_membership_cycles_period')
        batch_op.drop_index('uq_membership_cycles_cycle')
        batch_op.drop_index('ix_membership_cycles_pending')
        batch_op.drop_index(batch_op.f('ix_membership_cycles_account_id'))

    op.drop_table('membership_cycles')
