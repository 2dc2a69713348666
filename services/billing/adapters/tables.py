"""Billing's tables (SQLAlchemy Core).

Money is integer minor units (`*_cents`) beside an ISO 4217 `currency`;
Connects are integers. Every table that an external effect depends on has a
unique key on that effect (request ids, one chargeback per purchase, one
grant per membership cycle), so a retry or a second replica cannot do it twice.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()
ID = sa.String(128)
TS = sa.DateTime(timezone=True)

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

# One sale of Connects. `state` is PENDING, then exactly one of COMPLETED or FAILED (terminal), and a
# COMPLETED purchase may later become CHARGED_BACK. `payment_status` is what the provider said of the
# payment intent (UNKNOWN until it answers, PROCESSING, CAPTURED, DECLINED). The Connects credit's
# request_id is `billing:purchase:<purchase_id>:credit` and its reference `purchase:<purchase_id>`.
purchases = sa.Table(
    "purchases", metadata,
    sa.Column("purchase_id", sa.String(32), primary_key=True),
    sa.Column("request_id", ID, nullable=False, unique=True),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("account_id", ID, nullable=False),
    sa.Column("bundle_id", sa.String(64), nullable=False),
    sa.Column("connects", sa.BigInteger, nullable=False),
    sa.Column("amount_cents", sa.BigInteger, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("payment_method", sa.String(128), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("payment_status", sa.String(16), nullable=False),
    sa.Column("payment_intent_id", sa.String(64), nullable=True, unique=True),
    sa.Column("payment_reference", sa.String(64), nullable=False, server_default=""),
    sa.Column("credit_request_id", sa.String(128), nullable=False, unique=True),
    sa.Column("credit_transaction_id", sa.String(64), nullable=True, unique=True),
    sa.Column("failure_reason", sa.String(64), nullable=False, server_default=""),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("captured_at", TS, nullable=True),
    sa.Column("finished_at", TS, nullable=True),
    sa.Column("updated_at", TS, nullable=False),
    # The pending-purchase resumer's lease and backoff.
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt_at", TS, nullable=True),
    sa.Column("lease_until", TS, nullable=True),
    sa.CheckConstraint("connects > 0 AND amount_cents > 0", name="ck_purchases_amounts"),
    sa.CheckConstraint("state IN ('PENDING', 'COMPLETED', 'FAILED', 'CHARGED_BACK')", name="ck_purchases_state"),
)
sa.Index("ix_purchases_account_created", purchases.c.account_id, purchases.c.created_at.desc(),
         purchases.c.purchase_id.desc())
sa.Index("ix_purchases_finished", purchases.c.finished_at)
_pending = purchases.c.state == "PENDING"
sa.Index("ix_purchases_pending", purchases.c.next_attempt_at, postgresql_where=_pending, sqlite_where=_pending)

# A payment reversal of a purchase: at most one per purchase (the unique key). `state` is PENDING until
# the ledger confirmed the clawback (ReverseCredit, request_id `billing:chargeback:<id>:reverse`),
# then RECORDED. `loss_cents` is the value of the purchased Connects already spent.
chargebacks = sa.Table(
    "chargebacks", metadata,
    sa.Column("chargeback_id", sa.String(32), primary_key=True),
    sa.Column("request_id", ID, nullable=False, unique=True),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("purchase_id", sa.String(32), sa.ForeignKey("purchases.purchase_id"), nullable=False, unique=True),
    sa.Column("account_id", ID, nullable=False, index=True),
    sa.Column("amount_cents", sa.BigInteger, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("connects", sa.BigInteger, nullable=False),
    sa.Column("credit_transaction_id", sa.String(64), nullable=False),
    sa.Column("connects_removed", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("connects_already_spent", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("loss_cents", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("provider_reference", sa.String(128), nullable=False),
    sa.Column("reason", sa.String(256), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("reversal_transaction_id", sa.String(64), nullable=True),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("recorded_at", TS, nullable=True),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt_at", TS, nullable=True),
    sa.Column("lease_until", TS, nullable=True),
)
sa.Index("ix_chargebacks_recorded", chargebacks.c.recorded_at)

# An account's plan: one row per account. BASIC grants 10 free Connects a cycle; FREELANCER_PLUS charges
# its fee and grants 100. `state` is the paid membership's (ACTIVE, CANCELLED, ENDED; '' on BASIC without
# one). Cycle n covers [period_start, period_end); the anchor (first period start) fixes the billing day.
memberships = sa.Table(
    "memberships", metadata,
    sa.Column("account_id", ID, primary_key=True),
    sa.Column("membership_id", sa.String(32), nullable=False, unique=True),
    sa.Column("plan", sa.String(24), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("fee_cents", sa.BigInteger, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("monthly_connects", sa.BigInteger, nullable=False),
    sa.Column("payment_method", sa.String(128), nullable=False),
    sa.Column("anchor", TS, nullable=False),
    sa.Column("cycle", sa.Integer, nullable=False),
    sa.Column("period_start", TS, nullable=False),
    sa.Column("period_end", TS, nullable=False),
    sa.Column("cancelled_at", TS, nullable=True),
    sa.Column("ended_at", TS, nullable=True),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("updated_at", TS, nullable=False),
)
sa.Index("ix_memberships_due", memberships.c.period_end)

# One grant (and its fee payment) of a membership cycle: unique per membership, cycle and kind (RENEWAL:
# the cycle's own grant; UPGRADE: the prorated grant of a mid-cycle upgrade) among the rows not FAILED (a
# declined start or upgrade grants nothing and may be asked again). The unique keys are what make two
# renewal schedulers grant a cycle once. Connects credit: request_id
# `billing:membership:<membership_id>:cycle:<n>[:upgrade]:credit`, reference `membership:<id>/cycle:<n>`.
membership_cycles = sa.Table(
    "membership_cycles", metadata,
    sa.Column("grant_id", sa.String(32), primary_key=True),
    sa.Column("membership_id", sa.String(32), nullable=False),
    sa.Column("cycle", sa.Integer, nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("account_id", ID, nullable=False, index=True),
    sa.Column("plan", sa.String(24), nullable=False),
    sa.Column("period_start", TS, nullable=False),
    sa.Column("period_end", TS, nullable=False),
    sa.Column("fee_cents", sa.BigInteger, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("connects", sa.BigInteger, nullable=False),
    sa.Column("payment_method", sa.String(128), nullable=False),
    # The StartMembership request that made it (empty for renewals made by the scheduler).
    sa.Column("request_id", ID, nullable=False, server_default=""),
    sa.Column("state", sa.String(16), nullable=False),  # PENDING, GRANTED, FAILED
    sa.Column("payment_status", sa.String(16), nullable=False),
    sa.Column("payment_intent_id", sa.String(64), nullable=True),
    sa.Column("payment_reference", sa.String(64), nullable=False, server_default=""),
    sa.Column("payment_attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("credit_transaction_id", sa.String(64), nullable=True),
    sa.Column("failure_reason", sa.String(64), nullable=False, server_default=""),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("paid_at", TS, nullable=True),
    sa.Column("finished_at", TS, nullable=True),
    sa.Column("next_attempt_at", TS, nullable=True),
    sa.Column("lease_until", TS, nullable=True),
)
_granting = membership_cycles.c.state != "FAILED"
sa.Index("uq_membership_cycles_cycle", membership_cycles.c.membership_id, membership_cycles.c.cycle,
         membership_cycles.c.kind, unique=True, postgresql_where=_granting, sqlite_where=_granting)
sa.Index("uq_membership_cycles_period", membership_cycles.c.membership_id, membership_cycles.c.period_start,
         membership_cycles.c.kind, unique=True, postgresql_where=_granting, sqlite_where=_granting)
_cycle_pending = membership_cycles.c.state == "PENDING"
sa.Index("ix_membership_cycles_pending", membership_cycles.c.next_attempt_at,
         postgresql_where=_cycle_pending, sqlite_where=_cycle_pending)

# Idempotency of the membership commands (StartMembership, CancelMembership): the stored answer.
membership_requests = sa.Table(
    "membership_requests", metadata,
    sa.Column("request_id", ID, primary_key=True),
    sa.Column("method", sa.String(32), nullable=False),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("account_id", ID, nullable=False),
    sa.Column("response", sa.Text, nullable=False),
    sa.Column("created_at", TS, nullable=False),
)

# Every webhook event the payment provider delivered, once (its id is the key), with what billing did with
# it: APPLIED, or IGNORED when it arrived for a payment already in a terminal state (recorded, not applied).
provider_events = sa.Table(
    "provider_events", metadata,
    sa.Column("event_id", sa.String(64), primary_key=True),
    sa.Column("type", sa.String(64), nullable=False),
    sa.Column("object_id", sa.String(64), nullable=False, index=True),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("received_at", TS, nullable=False),
)

BILLING_TABLES = (purchases, chargebacks, memberships, membership_cycles, membership_requests, provider_events)
