"""PurchaseConnects and what finishes a purchase: charge, capture, credit, exactly once.

    purchase_connects -> record PENDING (unique request_id) -> charge (idempotency key from the purchase)
      -> captured: Connects.Credit(PURCHASE, request_id from the purchase) -> COMPLETED
      -> declined: FAILED (PAYMENT_DECLINED), nothing credited
      -> processing / no answer / ledger down: stays PENDING; the webhook or the resumer finishes it

Each step is idempotent on its own key, so running it again (a retried request,
a redelivered webhook, the resumer after a crash, a second replica) finds the
first answer: the provider returns the same intent, the ledger the same credit
transaction, and `Purchase` ignores transitions out of a terminal state.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime

from services.billing.adapters import events
from services.billing.domain import catalog, commands, errors
from services.billing.domain.purchase import Purchase, PurchaseState
from services.billing.service_layer.context import Context
from services.billing.service_layer.payments import IntentStatus, PaymentIntent
from services.billing.service_layer.ports import purchase_credit_request_id, purchase_reference
from services.kit.errors import DomainError, InvalidArgument, Unavailable

log = logging.getLogger(__name__)
MAX_PAGE_SIZE = 500
DEFAULT_PAGE_SIZE = 50


def payment_key(purchase_id: str) -> str:
    return f"billing:purchase:{purchase_id}"


def purchase_connects(ctx: Context, cmd: commands.PurchaseConnects) -> Purchase:
    """Buy Connects. Returns the purchase COMPLETED or PENDING; raises PaymentDeclined for a FAILED one.

    Everything that can be refused is checked before anything is stored or charged."""
    item = catalog.price(bundle_id=cmd.bundle_id, quantity=cmd.quantity, agency=cmd.agency, currency=cmd.currency)
    now = ctx.clock()
    fresh = Purchase.new(request_id=cmd.request_id, fingerprint=cmd.fingerprint(), account_id=cmd.account_id,
                         item=item, payment_method=cmd.payment_method, now=now)
    purchase: Purchase | None = None
    with ctx.uow() as uow:
        # The insert is the idempotency check (the unique request_id); a retry finds the first purchase.
        if uow.purchases.add(fresh, resume_at=now + ctx.retry.resume_after):
            uow.commit()
            purchase = fresh
    if purchase is None:
        with ctx.uow() as uow:
            purchase = uow.purchases.by_request(cmd.request_id)
    assert purchase is not None
    if purchase.fingerprint != cmd.fingerprint():
        raise errors.RequestIdReused(cmd.request_id)
    purchase = advance(ctx, purchase)
    return answer(purchase)


def answer(purchase: Purchase) -> Purchase:
    """What PurchaseConnects answers for a purchase (a retry gets the same answer as the first call)."""
    if purchase.state is PurchaseState.FAILED and purchase.failure_reason == "PAYMENT_DECLINED":
        raise errors.PaymentDeclined(purchase.purchase_id)
    return purchase


def get_purchase(ctx: Context, purchase_id: str) -> Purchase:
    commands.check_id("purchase_id", purchase_id, 64)
    with ctx.uow() as uow:
        purchase = uow.purchases.get(purchase_id)
    if purchase is None:
        raise errors.PurchaseNotFound(purchase_id)
    return purchase


def list_purchases(ctx: Context, account_id: str, page_size: int,
                   after: tuple[datetime, str] | None) -> list[Purchase]:
    """Newest first; `page_size` 0 means 50 and is capped at 500. One more than asked tells a next page."""
    commands.check_id("account_id", account_id)
    if page_size < 0:
        raise InvalidArgument("INVALID_FIELD", "page_size must not be negative", field="page_size")
    size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    with ctx.uow() as uow:
        return uow.purchases.page(account_id, after, size + 1)


# -- the steps ------------------------------------------------------------------------------------

def advance(ctx: Context, purchase: Purchase, *, poll: bool = False) -> Purchase:
    """Take a PENDING purchase as far as it can go now. Raises PaymentProviderUnavailable only when the charge
    itself got no answer (the purchase stays PENDING; the same request_id or the resumer asks again)."""
    if purchase.needs_charge:
        intent = _charge(ctx, purchase)
        purchase = _on_intent(ctx, purchase, intent)
    elif purchase.awaiting_capture and poll:
        intent = _timed(ctx, lambda: ctx.provider.retrieve(purchase.payment_intent_id))
        purchase = _on_intent(ctx, purchase, intent)
    return purchase


def _timed(ctx: Context, call: Callable[[], PaymentIntent]) -> PaymentIntent:
    started = time.perf_counter()
    try:
        intent = call()
    except errors.PaymentProviderUnavailable:
        ctx.metrics.payment_call("unavailable", time.perf_counter() - started)
        raise
    ctx.metrics.payment_call(intent.status.value.lower(), time.perf_counter() - started)
    return intent


def _charge(ctx: Context, purchase: Purchase) -> PaymentIntent:
    return _timed(ctx, lambda: ctx.provider.create_payment(
        idempotency_key=payment_key(purchase.purchase_id), amount_cents=purchase.amount_cents,
        currency=purchase.currency, payment_method=purchase.payment_method,
        metadata={"purchase_id": purchase.purchase_id, "account_id": purchase.account_id}))


def _on_intent(ctx: Context, purchase: Purchase, intent: PaymentIntent) -> Purchase:
    """Apply what the provider said about the payment, then credit if it is captured."""
    now = ctx.clock()
    if intent.status is IntentStatus.SUCCEEDED:
        return credit(ctx, purchase.payment_captured(intent.intent_id, intent.charge_id, now))
    if intent.status is IntentStatus.DECLINED:
        return transition(ctx, purchase.purchase_id,
                          lambda p: p.payment_failed(intent.intent_id, "PAYMENT_DECLINED", now))
    return transition(ctx, purchase.purchase_id,
                      lambda p: p.payment_processing(intent.intent_id, intent.charge_id))


def credit(ctx: Context, captured: Purchase) -> Purchase:
    """Credit a captured purchase's Connects once (the request_id derives from the purchase) and complete it.

    The capture is saved with the completion in one transaction; if the ledger cannot be reached the capture
    alone is saved and the purchase stays PENDING for the resumer."""
    if not captured.needs_credit:
        return captured
    capture = _capture_of(captured)
    try:
        move = ctx.ledger.credit(purchase_credit_request_id(captured.purchase_id), captured.account_id,
                                 captured.connects, "PURCHASE", purchase_reference(captured.purchase_id))
    except Unavailable as exc:
        log.info("purchase %s captured, credit deferred: %s", captured.purchase_id, exc.reason)
        return transition(ctx, captured.purchase_id, capture)
    except DomainError as exc:  # the ledger refused for good: fail it and give the money back
        reason = f"CREDIT_REFUSED_{exc.reason}"
        log.warning("purchase %s: the ledger refused the credit (%s); refunding", captured.purchase_id, exc.reason)
        failed = transition(ctx, captured.purchase_id, lambda p: capture(p).credit_refused(reason, ctx.clock()))
        ctx.provider.refund(idempotency_key=f"{payment_key(captured.purchase_id)}:refund",
                            intent_id=captured.payment_intent_id, amount_cents=captured.amount_cents)
        return failed
    return _complete(ctx, captured.credited(move.transaction_id, ctx.clock()), capture)


def _complete(ctx: Context, done: Purchase, capture: Callable[[Purchase], Purchase]) -> Purchase:
    """Save a credited purchase as COMPLETED with one conditional UPDATE (only a PENDING row changes: a terminal
    state is never overwritten) and queue its event; if the row was no longer PENDING, the general path decides."""
    now = ctx.clock()
    with ctx.uow() as uow:
        if uow.purchases.save_if_pending(done, now):
            uow.publish(events.BILLING_TOPIC, events.purchase_completed(done, now))
            uow.commit()
            ctx.metrics.purchase_finished(done.state.value.lower(), done.connects)
            return done
    return transition(ctx, done.purchase_id, lambda p: capture(p).credited(done.credit_transaction_id, now))


def _capture_of(captured: Purchase) -> Callable[[Purchase], Purchase]:
    at = captured.captured_at or captured.created_at
    return lambda p: p.payment_captured(captured.payment_intent_id, captured.payment_reference, at)


def transition(ctx: Context, purchase_id: str, change: Callable[[Purchase], Purchase]) -> Purchase:
    """Apply `change` to the stored purchase under its row lock; publish and count a state change once."""
    now = ctx.clock()
    with ctx.uow() as uow:
        before = uow.purchases.get(purchase_id, lock=True)
        if before is None:
            raise errors.PurchaseNotFound(purchase_id)
        after = change(before)
        if after == before:
            return before
        uow.purchases.save(after, now)
        finished = before.state is PurchaseState.PENDING and after.state is not PurchaseState.PENDING
        if finished and after.state is PurchaseState.COMPLETED:
            uow.publish(events.BILLING_TOPIC, events.purchase_completed(after, now))
        elif finished and after.state is PurchaseState.FAILED:
            uow.publish(events.BILLING_TOPIC, events.purchase_failed(after, now))
        uow.commit()
    if finished:
        ctx.metrics.purchase_finished(after.state.value.lower(), after.connects)
    return after


def resume(ctx: Context, purchase: Purchase) -> Purchase:
    """The resumer's step for one claimed PENDING purchase: charge (same key), poll the provider, credit."""
    try:
        purchase = advance(ctx, purchase, poll=True)
        if purchase.needs_credit:
            purchase = credit(ctx, purchase)
    except errors.PaymentProviderUnavailable as exc:
        log.info("purchase %s: provider still unavailable (%s)", purchase.purchase_id, exc.message)
    if purchase.state is PurchaseState.PENDING:
        with ctx.uow() as uow:
            uow.purchases.retry_later(purchase.purchase_id, ctx.clock() + ctx.retry.backoff(0))
            uow.commit()
    return purchase


def resume_pending(ctx: Context, limit: int = 50) -> int:
    """Claim and resume PENDING purchases that are due (after a crash, an outage, a lost answer)."""
    with ctx.uow() as uow:
        claimed = uow.purchases.claim_pending(ctx.clock(), ctx.retry.lease, limit)
        uow.commit()
    for purchase in claimed:
        try:
            resume(ctx, purchase)
        except Exception:
            log.exception("resuming purchase %s failed; it stays PENDING", purchase.purchase_id)
    return len(claimed)
