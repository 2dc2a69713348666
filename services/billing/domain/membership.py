"""Memberships: plans, their cycles and the decisions of start, upgrade, renewal and lapse (pure).

One row per account. No row means BASIC without grants from billing. A
membership that billing knows grants every cycle (monthly, anchored at its
start, see `proration`): BASIC grants 10 free Connects; FREELANCER_PLUS
charges its fee and grants 100 (90 from the plan plus the 10 free). Each
cycle's grant is a `CycleGrant`, unique per (membership, cycle, kind).

- Start (no membership, or an ended one with no cycle in force): cycle 1 of a
  new anchor, full fee and full grant.
- Upgrade from a BASIC cycle in force: the plan's fee and extra Connects
  (100 - 10) prorated over what is left of that cycle, with the whole period
  as denominator (ours: the fee is prorated like the Connects); the next
  renewal is full.
- Cancel: renewal stops; FREELANCER_PLUS stays in force until period_end,
  then BASIC applies (state ENDED) and its free grants continue.
- Renewal failure: the fee is retried `max_attempts` times, `retry_after`
  apart; then the membership lapses to BASIC (state ENDED) and the cycle
  grants the BASIC 10 instead.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from services.billing.domain import proration
from services.billing.domain.errors import MembershipAlreadyActive, MembershipNotFound
from services.billing.domain.purchase import new_id


class Plan(StrEnum):
    BASIC = "BASIC"
    FREELANCER_PLUS = "FREELANCER_PLUS"


class MembershipState(StrEnum):
    ACTIVE = "ACTIVE"  # BASIC rows are ACTIVE while billing grants their cycles
    CANCELLED = "CANCELLED"
    ENDED = "ENDED"


class GrantKind(StrEnum):
    RENEWAL = "RENEWAL"
    UPGRADE = "UPGRADE"


class CycleState(StrEnum):
    PENDING = "PENDING"
    GRANTED = "GRANTED"
    FAILED = "FAILED"


BASIC_CONNECTS = 10
PLUS_CONNECTS = 100


@dataclass(frozen=True)
class PlanTerms:
    """What the plans cost and grant (the fee is configuration)."""

    plus_fee_cents: int = 1999
    currency: str = "USD"

    def fee(self, plan: Plan) -> int:
        return self.plus_fee_cents if plan is Plan.FREELANCER_PLUS else 0

    @staticmethod
    def connects(plan: Plan) -> int:
        return PLUS_CONNECTS if plan is Plan.FREELANCER_PLUS else BASIC_CONNECTS


@dataclass(frozen=True)
class Membership:
    account_id: str
    membership_id: str
    plan: Plan
    state: MembershipState
    fee_cents: int
    currency: str
    monthly_connects: int
    payment_method: str
    anchor: datetime
    cycle: int
    period_start: datetime
    period_end: datetime
    created_at: datetime
    cancelled_at: datetime | None = None
    ended_at: datetime | None = None

    @property
    def paid_in_force(self) -> bool:
        return self.plan is Plan.FREELANCER_PLUS and self.state in (MembershipState.ACTIVE, MembershipState.CANCELLED)

    def due(self, now: datetime) -> bool:
        return self.period_end <= now


@dataclass(frozen=True)
class CycleGrant:
    """One cycle's fee and Connects. `fee_cents` 0 means nothing to charge."""

    grant_id: str
    membership_id: str
    account_id: str
    cycle: int
    kind: GrantKind
    plan: Plan
    period_start: datetime
    period_end: datetime
    fee_cents: int
    currency: str
    connects: int
    payment_method: str
    created_at: datetime
    request_id: str = ""
    state: CycleState = CycleState.PENDING
    payment_status: str = "UNKNOWN"  # as Purchase's: UNKNOWN, PROCESSING, CAPTURED, DECLINED
    payment_intent_id: str = ""
    payment_reference: str = ""
    payment_attempts: int = 0
    credit_transaction_id: str = ""
    failure_reason: str = ""
    paid_at: datetime | None = None
    finished_at: datetime | None = None
    next_attempt_at: datetime | None = None

    @property
    def needs_payment(self) -> bool:
        return self.state is CycleState.PENDING and self.fee_cents > 0 and self.payment_status != "CAPTURED"

    @property
    def needs_credit(self) -> bool:
        return self.state is CycleState.PENDING and not self.needs_payment

    def payment_key(self) -> str:
        """Idempotency key of the current payment attempt at the provider."""
        suffix = ":upgrade" if self.kind is GrantKind.UPGRADE else ""
        return f"billing:membership:{self.membership_id}:cycle:{self.cycle}{suffix}:attempt:{self.payment_attempts + 1}"


def start(current: Membership | None, *, account_id: str, plan: Plan, payment_method: str, terms: PlanTerms,
          now: datetime, request_id: str = "") -> CycleGrant:
    """The grant a StartMembership makes (a new cycle 1, or a prorated upgrade of the BASIC cycle in force)."""
    if current is not None:
        if current.paid_in_force:
            raise MembershipAlreadyActive(account_id, current.plan.value)
        in_force = current.state is not MembershipState.CANCELLED and current.period_start <= now < current.period_end
        if plan is Plan.BASIC and in_force:
            raise MembershipAlreadyActive(account_id, current.plan.value)
        if plan is Plan.FREELANCER_PLUS and in_force:
            extra = terms.connects(plan) - terms.connects(current.plan)
            window = {"start": current.period_start, "end": current.period_end, "now": now}
            return CycleGrant(new_id(), current.membership_id, account_id, current.cycle, GrantKind.UPGRADE, plan,
                              current.period_start, current.period_end,
                              proration.prorate(terms.fee(plan), **window), terms.currency,
                              proration.prorate(extra, **window), payment_method, now, request_id)
    membership_id = current.membership_id if current is not None else new_id()
    cycle = current.cycle + 1 if current is not None else 1
    start_at, end_at = now, proration.add_months(now, 1)
    return CycleGrant(new_id(), membership_id, account_id, cycle, GrantKind.RENEWAL, plan, start_at, end_at,
                      terms.fee(plan), terms.currency, terms.connects(plan), payment_method, now, request_id)


def apply_paid(current: Membership | None, grant: CycleGrant, terms: PlanTerms, now: datetime) -> Membership:
    """The membership once `grant` is paid (or free): the plan and, for a new start, its period."""
    if grant.kind is GrantKind.UPGRADE and current is not None:
        return replace(current, plan=grant.plan, state=MembershipState.ACTIVE, fee_cents=terms.fee(grant.plan),
                       monthly_connects=terms.connects(grant.plan), payment_method=grant.payment_method,
                       cancelled_at=None, ended_at=None)
    # A RENEWAL grant made by `start` begins a new anchor (renewals move the membership when claimed).
    return Membership(grant.account_id, grant.membership_id, grant.plan, MembershipState.ACTIVE,
                      terms.fee(grant.plan), terms.currency, terms.connects(grant.plan), grant.payment_method,
                      grant.period_start, grant.cycle, grant.period_start, grant.period_end,
                      current.created_at if current else now)


def cancel(current: Membership | None, *, account_id: str, now: datetime) -> Membership:
    """Stop renewal; the paid plan stays until period_end. Cancelling a cancelled one changes nothing."""
    if current is None or current.plan is not Plan.FREELANCER_PLUS or current.state is MembershipState.ENDED:
        raise MembershipNotFound(account_id)
    if current.state is MembershipState.CANCELLED:
        return current
    return replace(current, state=MembershipState.CANCELLED, cancelled_at=now)


def renew(current: Membership, terms: PlanTerms, now: datetime) -> tuple[Membership, CycleGrant]:
    """The next cycle of a due membership: it moves into the new period at once (a paid one is in grace while
    its fee is retried). A cancelled plan ends at its period's end and BASIC applies from then on."""
    m = current
    if m.plan is Plan.FREELANCER_PLUS and m.state is MembershipState.CANCELLED:
        m = replace(m, plan=Plan.BASIC, state=MembershipState.ENDED, fee_cents=0,
                    monthly_connects=terms.connects(Plan.BASIC), ended_at=m.period_end)
    cycle = m.cycle + 1
    start_at = m.period_end
    end_at = proration.period(m.anchor, proration.cycle_at(m.anchor, start_at))[1]
    m = replace(m, cycle=cycle, period_start=start_at, period_end=end_at)
    grant = CycleGrant(new_id(), m.membership_id, m.account_id, cycle, GrantKind.RENEWAL, m.plan, start_at, end_at,
                       m.fee_cents, m.currency, m.monthly_connects, m.payment_method, now)
    return m, grant


def payment_declined(grant: CycleGrant, reason: str, *, max_attempts: int, retry_after: timedelta,
                     now: datetime) -> tuple[CycleGrant, bool]:
    """A fee attempt failed: retry later, or (after `max_attempts`) give up; True when the plan lapses."""
    attempts = grant.payment_attempts + 1
    if attempts < max_attempts:
        return replace(grant, payment_attempts=attempts, payment_status="UNKNOWN", payment_intent_id="",
                       failure_reason=reason, next_attempt_at=now + retry_after), False
    if grant.kind is GrantKind.UPGRADE or grant.cycle == 1:
        return replace(grant, payment_attempts=attempts, state=CycleState.FAILED, payment_status="DECLINED",
                       failure_reason=reason, finished_at=now), False
    return replace(grant, payment_attempts=attempts, payment_status="DECLINED", failure_reason=reason), True


def lapse(current: Membership, grant: CycleGrant, terms: PlanTerms) -> tuple[Membership, CycleGrant]:
    """A renewal that could not be paid: BASIC applies from the cycle's start; the cycle grants BASIC's 10."""
    m = replace(current, plan=Plan.BASIC, state=MembershipState.ENDED, fee_cents=0,
                monthly_connects=terms.connects(Plan.BASIC), ended_at=grant.period_start)
    g = replace(grant, plan=Plan.BASIC, fee_cents=0, connects=terms.connects(Plan.BASIC))
    return m, g
