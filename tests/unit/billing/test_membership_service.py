"""Memberships through the service layer: starts, prorated upgrades, renewals, retries, lapse, cancellation."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import timedelta

import pytest

from services.billing.domain import commands
from services.billing.domain.errors import (
    MembershipAlreadyActive,
    MembershipNotFound,
    MembershipPending,
    PaymentDeclined,
)
from services.billing.domain.membership import CycleState, GrantKind, MembershipState, Plan
from services.billing.domain.proration import prorate
from services.billing.service_layer import memberships as uc
from tests.conftest import unique
from tests.unit.billing.support import outbox_types


def start(ctx, account, plan=Plan.FREELANCER_PLUS, card="pm_card_visa"):
    return uc.start_membership(ctx, commands.StartMembership(unique("r"), account, plan, card))


def grants(ctx, account):
    with ctx.uow() as uow:
        return uow.cycles.for_account(account)


def renew_all(ctx):
    while uc.run_renewals(ctx):
        pass


def test_starting_plus_charges_the_fee_and_grants_100_connects(ctx, engine):
    account = unique("acct")
    m, grant = start(ctx, account)
    assert (m.plan, m.state, m.fee_cents, m.monthly_connects) == (Plan.FREELANCER_PLUS, MembershipState.ACTIVE,
                                                                  1999, 100)
    assert (grant.connects, grant.state, grant.fee_cents) == (100, CycleState.GRANTED, 1999)
    assert ctx.ledger.credited(account, "PLAN_GRANT") == 100
    assert m.period_end == m.period_start.replace(month=2, day=28)  # anchored on the 31st: clamped
    assert outbox_types(engine, account) == ["MembershipStarted"]


def test_a_retried_start_returns_the_same_grant_and_a_second_start_is_refused(ctx):
    account = unique("acct")
    cmd = commands.StartMembership(unique("r"), account, Plan.FREELANCER_PLUS, "pm_card_visa")
    first = uc.start_membership(ctx, cmd)
    assert uc.start_membership(ctx, cmd)[1] == first[1]
    with pytest.raises(MembershipAlreadyActive):
        start(ctx, account)
    assert ctx.ledger.credited(account, "PLAN_GRANT") == 100


def test_a_declined_start_changes_nothing_and_may_be_tried_again(ctx):
    account = unique("acct")
    with pytest.raises(PaymentDeclined):
        start(ctx, account, card="pm_card_declined")
    assert uc.get_membership(ctx, account) is None and ctx.ledger.calls == 0
    m, _ = start(ctx, account)
    assert m.plan is Plan.FREELANCER_PLUS


def test_basic_grants_10_free_monthly_and_an_upgrade_mid_cycle_grants_the_prorated_rest(ctx):
    account = unique("acct")
    m, grant = start(ctx, account, Plan.BASIC, card="")
    assert (m.plan, grant.connects, grant.fee_cents) == (Plan.BASIC, 10, 0)
    ctx.clock.advance(days=10)
    up, upgrade = start(ctx, account)
    expected = {"start": m.period_start, "end": m.period_end, "now": ctx.clock()}
    assert upgrade.kind is GrantKind.UPGRADE
    assert upgrade.connects == prorate(90, **expected) and upgrade.fee_cents == prorate(1999, **expected)
    assert (up.plan, up.period_end) == (Plan.FREELANCER_PLUS, m.period_end)
    assert ctx.ledger.credited(account, "PLAN_GRANT") == 10 + upgrade.connects
    ctx.clock.now = m.period_end + timedelta(minutes=1)
    renew_all(ctx)
    assert ctx.ledger.credited(account, "PLAN_GRANT") == 10 + upgrade.connects + 100


def test_renewals_charge_and_grant_each_cycle_once_even_when_run_repeatedly(ctx, engine):
    account = unique("acct")
    start(ctx, account)
    for _ in range(3):
        ctx.clock.now = uc.get_membership(ctx, account).period_end + timedelta(seconds=1)
        renew_all(ctx)
        renew_all(ctx)
    assert [g.cycle for g in grants(ctx, account)] == [1, 2, 3, 4]
    assert ctx.ledger.credited(account, "PLAN_GRANT") == 400
    assert outbox_types(engine, account) == ["MembershipStarted"] + ["MembershipRenewed"] * 3


def test_a_renewal_after_a_long_outage_catches_up_one_cycle_at_a_time(ctx):
    account = unique("acct")
    start(ctx, account)
    ctx.clock.advance(days=100)
    renew_all(ctx)
    cycles = grants(ctx, account)
    assert [g.cycle for g in cycles] == [1, 2, 3, 4]  # 31 Jan + 100 days is in the period 30 Apr - 31 May
    assert all(a.period_end == b.period_start for a, b in itertools.pairwise(cycles))


def test_a_declined_renewal_is_retried_then_the_membership_lapses_to_basic(ctx, engine):
    account = unique("acct")
    m, _ = start(ctx, account)
    with ctx.uow() as uow:  # the card on file now declines
        uow.memberships.save(replace(uow.memberships.get(account), payment_method="pm_card_declined"), ctx.clock())
        uow.commit()
    ctx.clock.now = m.period_end + timedelta(seconds=1)
    renew_all(ctx)
    (renewal,) = [g for g in grants(ctx, account) if g.cycle == 2]
    assert (renewal.state, renewal.payment_attempts) == (CycleState.PENDING, 1)
    ctx.clock.advance(days=1, seconds=1)
    renew_all(ctx)
    ctx.clock.advance(days=1, seconds=1)
    renew_all(ctx)
    (renewal,) = [g for g in grants(ctx, account) if g.cycle == 2]
    assert (renewal.state, renewal.plan, renewal.connects, renewal.fee_cents) == (CycleState.GRANTED, Plan.BASIC,
                                                                                 10, 0)
    lapsed = uc.get_membership(ctx, account)
    assert (lapsed.plan, lapsed.state) == (Plan.BASIC, MembershipState.ENDED)
    assert ctx.ledger.credited(account, "PLAN_GRANT") == 110
    assert "MembershipRenewalFailed" in outbox_types(engine, account)


def test_a_cancelled_membership_stays_until_period_end_then_basic_applies(ctx, engine):
    account = unique("acct")
    m, _ = start(ctx, account)
    ctx.clock.advance(days=3)
    cancelled = uc.cancel_membership(ctx, commands.CancelMembership(unique("r"), account))
    assert (cancelled.state, cancelled.plan, cancelled.period_end) == (MembershipState.CANCELLED,
                                                                       Plan.FREELANCER_PLUS, m.period_end)
    again = uc.cancel_membership(ctx, commands.CancelMembership(unique("r"), account))
    assert again == cancelled
    ctx.clock.now = m.period_end + timedelta(seconds=1)
    renew_all(ctx)
    ended = uc.get_membership(ctx, account)
    assert (ended.plan, ended.state) == (Plan.BASIC, MembershipState.ENDED)
    assert ctx.ledger.credited(account, "PLAN_GRANT") == 100 + 10
    assert len(ctx.provider.core.intents()) == 1  # no fee after the cancellation
    assert outbox_types(engine, account) == ["MembershipStarted", "MembershipCancelled", "MembershipRenewed"]


def test_cancelling_without_a_paid_membership_is_not_found(ctx):
    with pytest.raises(MembershipNotFound):
        uc.cancel_membership(ctx, commands.CancelMembership(unique("r"), unique("acct")))


def test_cancelling_while_the_first_fee_is_still_processing_is_a_rule_refusal_not_not_found(ctx):
    account = unique("acct")
    m, grant = start(ctx, account, card="pm_card_async")
    assert m is None and grant.payment_status == "PROCESSING"  # StartMembership answered, the fee is in flight
    with pytest.raises(MembershipPending) as refused:
        uc.cancel_membership(ctx, commands.CancelMembership(unique("r"), account))
    assert refused.value.reason == "MEMBERSHIP_PENDING"
    assert uc.get_membership(ctx, account) is None
