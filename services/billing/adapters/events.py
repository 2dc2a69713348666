"""Billing's facts as `billing.events.v1` envelopes and API messages (protobuf)."""

from __future__ import annotations

from datetime import UTC, datetime

from adsmon.billing.v1 import billing_pb2 as pb
from adsmon.billing.v1 import events_pb2
from adsmon.events.v1.event_pb2 import Event
from adsmon.type.v1 import money_pb2
from google.protobuf.timestamp_pb2 import Timestamp

from services.billing.adapters.topics import BILLING_EVENTS as BILLING_TOPIC
from services.billing.domain.chargeback import Chargeback
from services.billing.domain.membership import CycleGrant, Membership, MembershipState, Plan
from services.billing.domain.purchase import Purchase, PurchaseState
from services.kit.kafka import make_event

__all__ = ["BILLING_TOPIC"]

PRODUCER = "billing"
PURCHASE_STATE = {PurchaseState.PENDING: pb.PURCHASE_STATE_PENDING, PurchaseState.COMPLETED:
                  pb.PURCHASE_STATE_COMPLETED, PurchaseState.FAILED: pb.PURCHASE_STATE_FAILED,
                  PurchaseState.CHARGED_BACK: pb.PURCHASE_STATE_CHARGED_BACK}
PLAN = {Plan.BASIC: pb.PLAN_BASIC, Plan.FREELANCER_PLUS: pb.PLAN_FREELANCER_PLUS}
FROM_PLAN = {v: k for k, v in PLAN.items()}
MEMBERSHIP_STATE = {MembershipState.ACTIVE: pb.MEMBERSHIP_STATE_ACTIVE,
                    MembershipState.CANCELLED: pb.MEMBERSHIP_STATE_CANCELLED,
                    MembershipState.ENDED: pb.MEMBERSHIP_STATE_ENDED}


def ts(value: datetime) -> Timestamp:
    out = Timestamp()
    out.FromDatetime(value if value.tzinfo else value.replace(tzinfo=UTC))
    return out


def money(cents: int, currency: str) -> money_pb2.Money:
    return money_pb2.Money(amount_minor=cents, currency_code=currency)


def purchase_pb(p: Purchase) -> pb.Purchase:
    msg = pb.Purchase(purchase_id=p.purchase_id, account_id=p.account_id, bundle_id=p.bundle_id,
                      connects=p.connects, price=money(p.amount_cents, p.currency), state=PURCHASE_STATE[p.state],
                      payment_reference=p.payment_reference or p.payment_intent_id,
                      ledger_transaction_id=p.credit_transaction_id, failure_reason=p.failure_reason,
                      created_at=ts(p.created_at))
    if p.finished_at is not None:
        msg.finished_at.CopyFrom(ts(p.finished_at))
    return msg


def membership_pb(m: Membership | None, account_id: str) -> pb.Membership:
    """The proto; BASIC shows no paid state (MEMBERSHIP_STATE_UNSPECIFIED) unless a paid one ended."""
    if m is None:
        return pb.Membership(account_id=account_id, plan=pb.PLAN_BASIC, monthly_connects=10)
    state = MEMBERSHIP_STATE[m.state] if (m.plan is Plan.FREELANCER_PLUS or m.state is MembershipState.ENDED) \
        else pb.MEMBERSHIP_STATE_UNSPECIFIED
    msg = pb.Membership(account_id=m.account_id, plan=PLAN[m.plan], state=state, fee=money(m.fee_cents, m.currency),
                        monthly_connects=m.monthly_connects, current_period_start=ts(m.period_start),
                        current_period_end=ts(m.period_end), payment_method=m.payment_method)
    if m.cancelled_at is not None:
        msg.cancelled_at.CopyFrom(ts(m.cancelled_at))
    return msg


def chargeback_pb(cb: Chargeback) -> pb.Chargeback:
    return pb.Chargeback(chargeback_id=cb.chargeback_id, purchase_id=cb.purchase_id, account_id=cb.account_id,
                         amount=money(cb.amount_cents, cb.currency), connects_removed=cb.connects_removed,
                         connects_already_spent=cb.connects_already_spent, loss=money(cb.loss_cents, cb.currency),
                         provider_reference=cb.provider_reference, created_at=ts(cb.created_at))


def _event(payload: object, account_id: str, event_id: str, now: datetime) -> Event:
    return make_event(payload, account_id, PRODUCER, event_id=event_id, occurred_at=now)  # type: ignore[arg-type]


def purchase_completed(p: Purchase, now: datetime) -> Event:
    return _event(events_pb2.PurchaseCompleted(
        purchase_id=p.purchase_id, account_id=p.account_id, bundle_id=p.bundle_id, connects=p.connects,
        price=money(p.amount_cents, p.currency), payment_reference=p.payment_reference or p.payment_intent_id,
        ledger_transaction_id=p.credit_transaction_id), p.account_id, f"billing-purchase-{p.purchase_id}-completed",
        now)


def purchase_failed(p: Purchase, now: datetime) -> Event:
    return _event(events_pb2.PurchaseFailed(
        purchase_id=p.purchase_id, account_id=p.account_id, connects=p.connects,
        price=money(p.amount_cents, p.currency), reason=p.failure_reason), p.account_id,
        f"billing-purchase-{p.purchase_id}-failed", now)


def _cycle_id(g: CycleGrant) -> str:
    return f"{g.membership_id}-{g.cycle}-{g.kind.value.lower()}"


def membership_started(g: CycleGrant, now: datetime) -> Event:
    return _event(events_pb2.MembershipStarted(
        account_id=g.account_id, plan=PLAN[g.plan], fee=money(g.fee_cents, g.currency), granted_connects=g.connects,
        period_start=ts(g.period_start), period_end=ts(g.period_end), payment_reference=g.payment_reference),
        g.account_id, f"billing-membership-{_cycle_id(g)}-started", now)


def membership_renewed(g: CycleGrant, now: datetime) -> Event:
    return _event(events_pb2.MembershipRenewed(
        account_id=g.account_id, plan=PLAN[g.plan], fee=money(g.fee_cents, g.currency), granted_connects=g.connects,
        period_start=ts(g.period_start), period_end=ts(g.period_end), payment_reference=g.payment_reference),
        g.account_id, f"billing-membership-{_cycle_id(g)}-renewed", now)


def membership_renewal_failed(g: CycleGrant, fee_cents: int, now: datetime) -> Event:
    return _event(events_pb2.MembershipRenewalFailed(
        account_id=g.account_id, plan=pb.PLAN_FREELANCER_PLUS, fee=money(fee_cents, g.currency),
        reason=g.failure_reason), g.account_id, f"billing-membership-{_cycle_id(g)}-renewal-failed", now)


def membership_cancelled(m: Membership, now: datetime) -> Event:
    return _event(events_pb2.MembershipCancelled(account_id=m.account_id, plan=PLAN[m.plan],
                                                 effective_at=ts(m.period_end)),
                  m.account_id, f"billing-membership-{m.membership_id}-{m.cycle}-cancelled", now)


def chargeback_recorded(cb: Chargeback, now: datetime) -> Event:
    return _event(events_pb2.ChargebackRecorded(
        chargeback_id=cb.chargeback_id, purchase_id=cb.purchase_id, account_id=cb.account_id,
        amount=money(cb.amount_cents, cb.currency), connects_removed=cb.connects_removed,
        connects_already_spent=cb.connects_already_spent, loss=money(cb.loss_cents, cb.currency)),
        cb.account_id, f"billing-chargeback-{cb.chargeback_id}-recorded", now)
