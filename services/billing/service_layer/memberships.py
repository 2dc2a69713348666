"""Memberships: StartMembership, CancelMembership, GetMembership, and the renewal scheduler's steps.

A cycle's grant is a row unique per (membership, cycle, kind): whoever inserts
it (a StartMembership, the scheduler in either replica) owns it, and its fee
and Connects are moved with keys derived from it (the provider's idempotency
key per attempt, the ledger's request_id per grant), so each cycle is charged
and granted once however often a step runs.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from services.billing.adapters import events
from services.billing.domain import commands, errors, membership
from services.billing.domain.membership import CycleGrant, CycleState, Membership, Plan
from services.billing.service_layer.context import Context
from services.billing.service_layer.payments import IntentStatus
from services.billing.service_layer.ports import cycle_credit_request_id, cycle_reference
from services.billing.service_layer.purchases import _timed
from services.kit.errors import Unavailable

log = logging.getLogger(__name__)


def get_membership(ctx: Context, account_id: str) -> Membership | None:
    commands.check_id("account_id", account_id)
    with ctx.uow() as uow:
        return uow.memberships.get(account_id)


def start_membership(ctx: Context, cmd: commands.StartMembership) -> tuple[Membership | None, CycleGrant]:
    """Start BASIC or FREELANCER_PLUS (a prorated upgrade from a BASIC cycle in force). Raises PaymentDeclined."""
    now = ctx.clock()
    with ctx.uow() as uow:
        stored = uow.requests.get(cmd.request_id)
        if stored is not None:
            method, fingerprint, response = stored
            if method != cmd.method or fingerprint != cmd.fingerprint():
                raise errors.RequestIdReused(cmd.request_id)
            grant = uow.cycles.get(response["grant_id"])
        else:
            current = uow.memberships.get(cmd.account_id, lock=True)
            grant = membership.start(current, account_id=cmd.account_id, plan=cmd.plan,
                                     payment_method=cmd.payment_method, terms=ctx.terms, now=now,
                                     request_id=cmd.request_id)
            grant = replace(grant, next_attempt_at=now + ctx.retry.resume_after)
            if not uow.cycles.add(grant):
                raise errors.MembershipAlreadyActive(cmd.account_id, "pending")
            uow.requests.add(cmd.request_id, cmd.method, cmd.fingerprint(), cmd.account_id,
                             {"grant_id": grant.grant_id},
                             now)
            if grant.fee_cents == 0:
                _activate(ctx, uow, current, grant)
            uow.commit()
    grant = advance_cycle(ctx, grant, interactive=True)
    if grant.state is CycleState.FAILED:
        raise errors.PaymentDeclined(f"membership:{grant.membership_id}/cycle:{grant.cycle}")
    return get_membership(ctx, cmd.account_id), grant


def _activate(ctx: Context, uow: object, current: Membership | None, grant: CycleGrant) -> None:
    m = membership.apply_paid(current, grant, ctx.terms, ctx.clock())
    uow.memberships.save(m, ctx.clock())  # type: ignore[attr-defined]
    uow.publish(events.BILLING_TOPIC, events.membership_started(grant, ctx.clock()))  # type: ignore[attr-defined]


def cancel_membership(ctx: Context, cmd: commands.CancelMembership) -> Membership:
    now = ctx.clock()
    with ctx.uow() as uow:
        stored = uow.requests.get(cmd.request_id)
        if stored is not None:
            method, fingerprint, _ = stored
            if method != cmd.method or fingerprint != cmd.fingerprint():
                raise errors.RequestIdReused(cmd.request_id)
            return uow.memberships.get(cmd.account_id)
        current = uow.memberships.get(cmd.account_id, lock=True)
        try:
            cancelled = membership.cancel(current, account_id=cmd.account_id, now=now)
        except errors.MembershipNotFound:
            if any(g.request_id and g.needs_payment for g in uow.cycles.for_account(cmd.account_id)):
                raise errors.MembershipPending(cmd.account_id) from None  # StartMembership answered; fee in flight
            raise
        uow.requests.add(cmd.request_id, cmd.method, cmd.fingerprint(), cmd.account_id, {}, now)
        if cancelled != current:
            uow.memberships.save(cancelled, now)
            uow.publish(events.BILLING_TOPIC, events.membership_cancelled(cancelled, now))
        uow.commit()
    return cancelled


# -- the cycle's steps ----------------------------------------------------------------------------

def advance_cycle(ctx: Context, grant: CycleGrant, *, interactive: bool = False) -> CycleGrant:
    """Charge the cycle's fee (if any, not yet paid), then grant its Connects; as far as it can go now.
    `interactive` (a StartMembership call): a provider that does not answer is the caller's error to retry."""
    if grant.needs_payment:
        grant = _pay(ctx, grant, interactive)
    if grant.needs_credit:
        grant = _grant(ctx, grant)
    return grant


def _pay(ctx: Context, grant: CycleGrant, interactive: bool) -> CycleGrant:
    key = grant.payment_key()
    try:
        if grant.payment_status == "PROCESSING" and grant.payment_intent_id:
            intent = _timed(ctx, lambda: ctx.provider.retrieve(grant.payment_intent_id))
        else:
            intent = _timed(ctx, lambda: ctx.provider.create_payment(
                idempotency_key=key, amount_cents=grant.fee_cents, currency=grant.currency,
                payment_method=grant.payment_method,
                metadata={"membership_id": grant.membership_id, "cycle": str(grant.cycle),
                          "kind": grant.kind.value, "account_id": grant.account_id}))
    except errors.PaymentProviderUnavailable:
        if interactive:
            raise
        return grant
    return on_fee_intent(ctx, grant, intent.intent_id, intent.status, intent.charge_id, intent.decline_code)


def on_fee_intent(ctx: Context, grant: CycleGrant, intent_id: str, status: IntentStatus, charge_id: str,
                  decline_code: str) -> CycleGrant:
    """Apply what the provider said of a fee payment (from the call's answer or a webhook)."""
    now = ctx.clock()
    with ctx.uow() as uow:
        g = uow.cycles.get(grant.grant_id, lock=True)
        if g is None or not g.needs_payment or (g.payment_intent_id and g.payment_intent_id != intent_id
                                                 and status is not IntentStatus.SUCCEEDED):
            return g or grant
        if status is IntentStatus.SUCCEEDED:
            g = replace(g, payment_status="CAPTURED", payment_intent_id=intent_id, payment_reference=charge_id,
                        paid_at=now)
            if g.request_id:
                _activate(ctx, uow, uow.memberships.get(g.account_id, lock=True), g)
        elif status is IntentStatus.PROCESSING:
            g = replace(g, payment_status="PROCESSING", payment_intent_id=intent_id)
        else:
            g = _declined(ctx, uow, g, decline_code or "PAYMENT_DECLINED")
        uow.cycles.save(g)
        uow.commit()
    return g


def _declined(ctx: Context, uow: object, g: CycleGrant, reason: str) -> CycleGrant:
    now = ctx.clock()
    fee = g.fee_cents
    if g.request_id:  # a start or an upgrade: the caller is told at once, nothing changes
        ctx.metrics.renewal("start_declined")
        return replace(g, state=CycleState.FAILED, payment_status="DECLINED", failure_reason="PAYMENT_DECLINED",
                       payment_attempts=g.payment_attempts + 1, finished_at=now)
    g, lapses = membership.payment_declined(g, "PAYMENT_DECLINED", max_attempts=ctx.retry.renewal_attempts,
                                            retry_after=ctx.retry.renewal_retry_after, now=now)
    if not lapses:
        ctx.metrics.renewal("payment_retry")
        return g
    current = uow.memberships.get(g.account_id, lock=True)  # type: ignore[attr-defined]
    m, g = membership.lapse(current, g, ctx.terms)
    uow.memberships.save(m, now)  # type: ignore[attr-defined]
    uow.publish(events.BILLING_TOPIC, events.membership_renewal_failed(g, fee, now))  # type: ignore[attr-defined]
    ctx.metrics.renewal("lapsed")
    return g


def _grant(ctx: Context, grant: CycleGrant) -> CycleGrant:
    tx_id = ""
    if grant.connects > 0:
        try:
            move = ctx.ledger.credit(cycle_credit_request_id(grant.membership_id, grant.cycle, grant.kind.value),
                                     grant.account_id, grant.connects, "PLAN_GRANT",
                                     cycle_reference(grant.membership_id, grant.cycle, grant.kind.value))
        except Unavailable as exc:
            log.info("membership %s cycle %d: grant deferred (%s)", grant.membership_id, grant.cycle, exc.reason)
            return grant
        tx_id = move.transaction_id
    now = ctx.clock()
    with ctx.uow() as uow:
        g = uow.cycles.get(grant.grant_id, lock=True)
        if g.state is not CycleState.PENDING:
            return g
        g = replace(g, state=CycleState.GRANTED, credit_transaction_id=tx_id, finished_at=now)
        uow.cycles.save(g)
        if not g.request_id:
            uow.publish(events.BILLING_TOPIC, events.membership_renewed(g, now))
        uow.commit()
    if not g.request_id:
        ctx.metrics.renewal("renewed" if g.plan is Plan.FREELANCER_PLUS else "basic_granted")
    return g


# -- the renewal scheduler ------------------------------------------------------------------------

def claim_due_renewals(ctx: Context, limit: int = 100) -> list[CycleGrant]:
    """Move every due membership into its next cycle and insert that cycle's grant (once: the unique key; the
    row lock makes a second replica skip the membership meanwhile)."""
    now = ctx.clock()
    made = []
    with ctx.uow() as uow:
        for current in uow.memberships.claim_due(now, limit):
            moved, grant = membership.renew(current, ctx.terms, now)
            if uow.cycles.add(grant):
                uow.memberships.save(moved, now)
                made.append(grant)
            else:  # the row lock makes this unreachable unless the data was changed by hand
                log.warning("membership %s cycle %d already has a grant; not renewed again", grant.membership_id,
                            grant.cycle)
        uow.commit()
    return made


def run_renewals(ctx: Context, limit: int = 100) -> int:
    """One scheduler run: claim due cycles, then work every pending cycle that is due. Returns the work done."""
    claimed = claim_due_renewals(ctx, limit)
    with ctx.uow() as uow:
        pending = uow.cycles.claim_pending(ctx.clock(), ctx.retry.lease, limit)
        uow.commit()
    for grant in pending:
        try:
            done = advance_cycle(ctx, grant)
        except Exception:
            log.exception("membership %s cycle %d failed; retried later", grant.membership_id, grant.cycle)
            ctx.metrics.renewal("error")
            done = grant
        if done.state is CycleState.PENDING:
            with ctx.uow() as uow:
                current = uow.cycles.get(done.grant_id)
                at = current.next_attempt_at if current.next_attempt_at and current.next_attempt_at > ctx.clock() \
                    else ctx.clock() + ctx.retry.backoff(0)
                uow.cycles.retry_later(done, at)
                uow.commit()
    return len(claimed) + len(pending)
