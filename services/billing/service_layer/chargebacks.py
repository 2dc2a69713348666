"""RecordChargeback: a purchase's payment was reversed; claw back the unspent Connects, book the rest as loss.

    record (PENDING; one per purchase: a unique key) -> ConnectsService.ReverseCredit of the purchase's credit
      (request_id from the chargeback) -> RECORDED with removed / already spent / loss, purchase CHARGED_BACK

If the ledger cannot be reached the chargeback stays PENDING (the caller gets
LEDGER_UNAVAILABLE and may retry with the same request_id; the resumer also
finishes it). A provider dispute webhook records one with request_id
`provider:dispute:<dispute_id>`.
"""

from __future__ import annotations

import logging

from services.billing.adapters import events
from services.billing.domain import commands, errors
from services.billing.domain.chargeback import Chargeback
from services.billing.domain.purchase import PurchaseState, new_id
from services.billing.service_layer.context import Context
from services.billing.service_layer.ports import chargeback_reverse_request_id
from services.kit.errors import Unavailable

log = logging.getLogger(__name__)


def record_chargeback(ctx: Context, cmd: commands.RecordChargeback) -> Chargeback:
    now = ctx.clock()
    with ctx.uow() as uow:
        cb = uow.chargebacks.by_request(cmd.request_id)
        if cb is None:
            purchase = uow.purchases.get(cmd.purchase_id, lock=True)
            if purchase is None:
                raise errors.PurchaseNotFound(cmd.purchase_id)
            existing = uow.chargebacks.for_purchase(cmd.purchase_id)
            if existing is not None:
                raise errors.ChargebackAlreadyRecorded(cmd.purchase_id, existing.chargeback_id)
            if purchase.state is not PurchaseState.COMPLETED:
                raise errors.PurchaseNotCompleted(purchase.purchase_id, purchase.state.value)
            cb = Chargeback(new_id(), cmd.request_id, cmd.fingerprint(), purchase.purchase_id, purchase.account_id,
                            purchase.amount_cents, purchase.currency, purchase.connects,
                            purchase.credit_transaction_id, cmd.provider_reference, cmd.reason, now)
            if not uow.chargebacks.add(cb, resume_at=now + ctx.retry.resume_after):
                raise errors.ChargebackAlreadyRecorded(cmd.purchase_id, "")
            uow.commit()
        elif cb.fingerprint != cmd.fingerprint():
            raise errors.RequestIdReused(cmd.request_id)
    if cb.state == "PENDING":
        cb = clawback(ctx, cb)
        if cb.state == "PENDING":
            raise Unavailable("LEDGER_UNAVAILABLE", "the Connects ledger did not answer; the chargeback is "
                              "recorded and its clawback will complete (retry with the same request_id)",
                              chargeback_id=cb.chargeback_id)
    return cb


def clawback(ctx: Context, cb: Chargeback) -> Chargeback:
    """Remove the purchase's unspent Connects (once: the request_id derives from the chargeback) and book it."""
    try:
        result = ctx.ledger.reverse_credit(chargeback_reverse_request_id(cb.chargeback_id), cb.credit_transaction_id)
    except Unavailable as exc:
        log.info("chargeback %s: clawback deferred (%s)", cb.chargeback_id, exc.reason)
        return cb
    now = ctx.clock()
    with ctx.uow() as uow:
        current = uow.chargebacks.get(cb.chargeback_id, lock=True)
        done = current.recorded(removed=result.removed, transaction_id=result.transaction_id, now=now)
        if done == current:
            return current
        uow.chargebacks.save(done)
        purchase = uow.purchases.get(cb.purchase_id, lock=True)
        uow.purchases.save(purchase.charged_back(), now)
        uow.publish(events.BILLING_TOPIC, events.chargeback_recorded(done, now))
        uow.commit()
    ctx.metrics.chargeback_recorded(done.connects_removed, done.loss_cents)
    return done


def resume_pending(ctx: Context, limit: int = 50) -> int:
    with ctx.uow() as uow:
        claimed = uow.chargebacks.claim_pending(ctx.clock(), ctx.retry.lease, limit)
        uow.commit()
    for cb in claimed:
        try:
            done = clawback(ctx, cb)
        except Exception:
            log.exception("chargeback %s: clawback failed; it stays PENDING", cb.chargeback_id)
            done = cb
        if done.state == "PENDING":
            with ctx.uow() as uow:
                uow.chargebacks.retry_later(cb.chargeback_id, ctx.clock() + ctx.retry.backoff(0))
                uow.commit()
    return len(claimed)
