"""The payment provider's webhook events: each recorded once (its id), applied only while it can change something.

Events arrive late, twice and out of order. A duplicate is skipped by its
event id; an event about a purchase or fee already past that point (a late
`payment_failed` after the capture, `processing` after `succeeded`, anything
after COMPLETED or FAILED) is recorded with outcome IGNORED and not applied.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime

from services.billing.domain import commands, errors
from services.billing.domain.purchase import Purchase
from services.billing.service_layer import chargebacks, memberships, purchases
from services.billing.service_layer.context import Context
from services.billing.service_layer.payments import EventType, IntentStatus, ProviderEvent
from services.kit.errors import DomainError

log = logging.getLogger(__name__)

FINAL = frozenset({"APPLIED", "IGNORED", "UNMATCHED"})
_INTENT_STATUS = {EventType.SUCCEEDED: IntentStatus.SUCCEEDED, EventType.FAILED: IntentStatus.DECLINED,
                  EventType.PROCESSING: IntentStatus.PROCESSING}


def handle_provider_event(ctx: Context, event: ProviderEvent) -> str:
    """Record and apply one webhook event; returns its outcome (DUPLICATE, APPLIED, IGNORED, UNMATCHED).

    The event row is written with its outcome once it has been applied (an event that failed midway is applied
    again when the provider redelivers it; every application is idempotent)."""
    status = _status_of(event)
    purchase_id = event.data.get("purchase_id", "")
    with ctx.uow() as uow:
        seen = uow.provider_events.outcome(event.event_id)
        if seen in FINAL:
            ctx.metrics.webhook_event(event.type, "duplicate")
            return "DUPLICATE"
        # The common case, an event about a purchase already past it (e.g. `succeeded` after the synchronous
        # capture completed it), is recorded in the same transaction that found it changes nothing.
        if status is not None and purchase_id:
            purchase = uow.purchases.get(purchase_id)
            if purchase is not None and _purchase_change(event, status, ctx.clock())(purchase) == purchase:
                uow.provider_events.record(event, "IGNORED", ctx.clock())
                uow.commit()
                ctx.metrics.webhook_event(event.type, "ignored")
                return "IGNORED"
    try:
        outcome = _apply(ctx, event)
    except Exception:
        # Not applied: the receiver answers an error and the provider delivers the event again.
        outcome = "RETRY"
        raise
    finally:
        with ctx.uow() as uow:
            uow.provider_events.record(event, outcome, ctx.clock())
            uow.commit()
    ctx.metrics.webhook_event(event.type, outcome.lower())
    return outcome


def _apply(ctx: Context, event: ProviderEvent) -> str:
    data = event.data
    if event.type == EventType.DISPUTE_CREATED:
        return _dispute(ctx, event)
    status = _status_of(event)
    if status is None:
        return "IGNORED"  # refunds: billing made them and already recorded why
    if data.get("purchase_id"):
        return _purchase_event(ctx, data["purchase_id"], event, status)
    if data.get("membership_id"):
        return _fee_event(ctx, event, status)
    return "UNMATCHED"


def _status_of(event: ProviderEvent) -> IntentStatus | None:
    return _INTENT_STATUS.get(EventType(event.type)) if event.type in set(EventType) else None


def _purchase_change(event: ProviderEvent, status: IntentStatus, now: datetime) -> Callable[[Purchase], Purchase]:
    """What a payment intent event does to its purchase (the state machine ignores what comes too late)."""
    intent_id = event.object_id
    charge_id = event.data.get("charge_id", "")

    def change(p: Purchase) -> Purchase:
        if p.payment_intent_id and p.payment_intent_id != intent_id:
            return p  # an event about some other intent: never ours to apply
        if status is IntentStatus.SUCCEEDED:
            return p.payment_captured(intent_id, charge_id, now)
        if status is IntentStatus.DECLINED:
            return p.payment_failed(intent_id, "PAYMENT_DECLINED", now)
        return p.payment_processing(intent_id, charge_id)

    return change


def _purchase_event(ctx: Context, purchase_id: str, event: ProviderEvent, status: IntentStatus) -> str:
    change = _purchase_change(event, status, ctx.clock())
    try:
        with ctx.uow() as uow:
            before = uow.purchases.get(purchase_id)
        if before is None:
            return "UNMATCHED"
        after = change(before)
        if after == before:
            return "IGNORED"
        if after.needs_credit:
            purchases.credit(ctx, after)  # saves the capture with the credit (or alone if the ledger is down)
        else:
            purchases.transition(ctx, purchase_id, change)
    except errors.PurchaseNotFound:
        return "UNMATCHED"
    return "APPLIED"


def _fee_event(ctx: Context, event: ProviderEvent, status: IntentStatus) -> str:
    with ctx.uow() as uow:
        grants = [g for g in uow.cycles.for_account(event.data.get("account_id", ""))
                  if g.membership_id == event.data["membership_id"] and str(g.cycle) == event.data.get("cycle")
                  and g.kind.value == event.data.get("kind")]
    live = [g for g in grants if g.needs_payment and g.payment_intent_id in ("", event.object_id)]
    if not live:
        return "IGNORED"
    grant = memberships.on_fee_intent(ctx, live[0], event.object_id, status, event.data.get("charge_id", ""),
                                      event.data.get("decline_code", ""))
    if grant == live[0]:
        return "IGNORED"
    memberships.advance_cycle(ctx, replace(grant))
    return "APPLIED"


def _dispute(ctx: Context, event: ProviderEvent) -> str:
    purchase_id = event.data.get("purchase_id", "")
    if not purchase_id:
        return "IGNORED"  # ours: a disputed membership fee is a loss billing does not claw Connects back for
    dispute_id = event.data.get("dispute_id", event.event_id)
    cmd = commands.RecordChargeback(f"provider:dispute:{dispute_id}", purchase_id, dispute_id,
                                    event.data.get("reason", ""))
    try:
        chargebacks.record_chargeback(ctx, cmd)
    except errors.ChargebackAlreadyRecorded:
        return "IGNORED"
    except errors.PurchaseNotCompleted as exc:
        if exc.metadata.get("state") == "PENDING":
            raise  # captured but not yet credited: apply the dispute once it is (the provider redelivers)
        return "IGNORED"
    except DomainError as exc:
        if exc.code == "UNAVAILABLE":
            return "APPLIED"  # recorded; the resumer completes the clawback
        log.warning("dispute %s on purchase %s not recorded: %s", dispute_id, purchase_id, exc.reason)
        return "IGNORED"
    return "APPLIED"
