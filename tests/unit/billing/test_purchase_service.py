"""PurchaseConnects through the service layer: exactly one credit whatever fails or repeats."""

from __future__ import annotations

from dataclasses import replace

import pytest

from services.billing.domain import commands
from services.billing.domain.errors import (
    BundleNotFound,
    PaymentDeclined,
    PaymentProviderUnavailable,
    PurchaseNotFound,
    QuantityOutOfRange,
    RequestIdReused,
)
from services.billing.domain.purchase import PaymentStatus, PurchaseState
from services.billing.service_layer import purchases as uc
from services.billing.service_layer.payments import EventType
from services.billing.service_layer.ports import purchase_credit_request_id
from services.billing.service_layer.webhooks import handle_provider_event
from services.kit.errors import InvalidArgument
from tests.conftest import unique
from tests.unit.billing.support import outbox_types


def buy(ctx, account=None, card="pm_card_visa", rid=None, **item):
    item = item or {"bundle_id": "connects-40"}
    return commands.PurchaseConnects(rid or unique("r"), account or unique("acct"), card, **item)


def test_a_captured_purchase_credits_its_connects_once_and_publishes_completed(ctx, engine):
    cmd = buy(ctx)
    p = uc.purchase_connects(ctx, cmd)
    assert (p.state, p.connects, p.amount_cents, p.payment_status) == (PurchaseState.COMPLETED, 40, 600,
                                                                       PaymentStatus.CAPTURED)
    assert ctx.ledger.credited(cmd.account_id) == 40
    assert purchase_credit_request_id(p.purchase_id) in ctx.ledger.requests
    assert outbox_types(engine, cmd.account_id) == ["PurchaseCompleted"]


def test_a_retried_request_returns_the_same_purchase_and_credits_nothing_more(ctx, engine):
    cmd = buy(ctx)
    first = uc.purchase_connects(ctx, cmd)
    again = uc.purchase_connects(ctx, cmd)
    assert again == first
    assert ctx.ledger.credited(cmd.account_id) == 40
    assert outbox_types(engine, cmd.account_id) == ["PurchaseCompleted"]


def test_the_same_request_id_for_another_purchase_is_refused(ctx):
    cmd = buy(ctx)
    uc.purchase_connects(ctx, cmd)
    with pytest.raises(RequestIdReused):
        uc.purchase_connects(ctx, replace(cmd, bundle_id="connects-80"))


def test_a_declined_card_fails_the_purchase_credits_nothing_and_a_retry_says_the_same(ctx, engine):
    cmd = buy(ctx, card="pm_card_declined")
    with pytest.raises(PaymentDeclined) as exc:
        uc.purchase_connects(ctx, cmd)
    purchase_id = exc.value.metadata["purchase_id"]
    p = uc.get_purchase(ctx, purchase_id)
    assert (p.state, p.failure_reason) == (PurchaseState.FAILED, "PAYMENT_DECLINED")
    with pytest.raises(PaymentDeclined):
        uc.purchase_connects(ctx, cmd)
    assert ctx.ledger.calls == 0
    assert outbox_types(engine, cmd.account_id) == ["PurchaseFailed"]


@pytest.mark.parametrize("item, error", [({"bundle_id": "connects-41"}, BundleNotFound),
                                         ({"bundle_id": "connects-300"}, BundleNotFound),
                                         ({"quantity": 0}, QuantityOutOfRange),
                                         ({"quantity": 10**9}, QuantityOutOfRange)])
def test_bad_items_are_refused_before_anything_is_stored_or_charged(ctx, item, error):
    with pytest.raises(error):
        uc.purchase_connects(ctx, buy(ctx, **item))
    assert ctx.provider.core.intents() == [] and ctx.ledger.calls == 0


def test_a_bad_currency_or_account_is_refused_before_anything_is_charged(ctx):
    with pytest.raises(InvalidArgument) as exc:
        uc.purchase_connects(ctx, buy(ctx, bundle_id="connects-10", currency="EUR"))
    assert exc.value.reason == "CURRENCY_NOT_SUPPORTED"
    for account in ("", "  ", "a b", "x" * 129, "bad\x00id"):
        with pytest.raises(InvalidArgument) as exc:
            commands.PurchaseConnects(unique("r"), account, "pm_card_visa", bundle_id="connects-10")
        assert exc.value.metadata["field"] == "account_id"
    assert ctx.provider.core.intents() == []


def test_an_unknown_purchase_is_not_found(ctx):
    with pytest.raises(PurchaseNotFound):
        uc.get_purchase(ctx, "nope")


def test_the_ledger_down_during_the_credit_leaves_it_pending_and_the_resumer_credits_it_once(ctx, engine):
    cmd = buy(ctx)
    ctx.ledger.down = 1
    p = uc.purchase_connects(ctx, cmd)
    assert (p.state, p.payment_status) == (PurchaseState.PENDING, PaymentStatus.CAPTURED)
    assert ctx.ledger.credited(cmd.account_id) == 0
    ctx.clock.advance(seconds=10)
    assert uc.resume_pending(ctx) == 1
    assert uc.get_purchase(ctx, p.purchase_id).state is PurchaseState.COMPLETED
    assert uc.resume_pending(ctx) == 0
    assert ctx.ledger.credited(cmd.account_id) == 40


def test_a_lost_credit_answer_is_asked_again_and_the_ledger_answers_the_same_credit(ctx):
    cmd = buy(ctx)
    ctx.ledger.lose_answers = 1  # applied, answer lost: the purchase cannot know
    p = uc.purchase_connects(ctx, cmd)
    assert p.state is PurchaseState.PENDING
    ctx.clock.advance(seconds=10)
    uc.resume_pending(ctx)
    done = uc.get_purchase(ctx, p.purchase_id)
    assert done.state is PurchaseState.COMPLETED
    assert ctx.ledger.credited(cmd.account_id) == 40 and len(ctx.ledger.credits) == 1


def test_a_transient_provider_error_is_unavailable_and_a_retry_charges_once(ctx):
    cmd = buy(ctx, card="pm_card_transient")
    with pytest.raises(PaymentProviderUnavailable):
        uc.purchase_connects(ctx, cmd)
    p = uc.purchase_connects(ctx, cmd)
    assert p.state is PurchaseState.COMPLETED
    assert len(ctx.provider.core.intents()) == 1 and ctx.ledger.credited(cmd.account_id) == 40


def test_a_provider_timeout_after_the_charge_is_resumed_to_the_same_payment(ctx):
    cmd = buy(ctx, card="pm_card_timeout")
    with pytest.raises(PaymentProviderUnavailable):
        uc.purchase_connects(ctx, cmd)
    ctx.clock.advance(seconds=10)
    uc.resume_pending(ctx)
    p = uc.purchase_connects(ctx, cmd)  # the client's retry finds it done
    assert p.state is PurchaseState.COMPLETED
    assert len(ctx.provider.core.intents()) == 1 and ctx.ledger.credited(cmd.account_id) == 40


def test_an_async_capture_completes_on_its_webhook_delivered_twice_and_out_of_order(ctx, engine):
    cmd = buy(ctx, card="pm_card_async")
    p = uc.purchase_connects(ctx, cmd)
    assert (p.state, p.payment_status) == (PurchaseState.PENDING, PaymentStatus.PROCESSING)
    events = ctx.provider.core.take_queued()
    assert [e.type for e in events].count(EventType.SUCCEEDED) == 2
    outcomes = [handle_provider_event(ctx, e) for e in reversed(events)]  # succeeded first, processing late
    assert outcomes.count("APPLIED") == 1 and outcomes.count("DUPLICATE") == 2
    assert uc.get_purchase(ctx, p.purchase_id).state is PurchaseState.COMPLETED
    assert ctx.ledger.credited(cmd.account_id) == 40
    assert outbox_types(engine, cmd.account_id) == ["PurchaseCompleted"]


def test_a_late_failed_webhook_after_success_is_recorded_and_not_applied(ctx):
    cmd = buy(ctx)
    p = uc.purchase_connects(ctx, cmd)
    late = ctx.provider.core.emit(EventType.FAILED, p.payment_intent_id, {"decline_code": "card_declined"})
    for e in ctx.provider.core.take_queued():
        handle_provider_event(ctx, e)
    with ctx.uow() as uow:
        assert (EventType.FAILED.value, "IGNORED") in uow.provider_events.outcomes(p.payment_intent_id)
    assert late.event_id
    assert uc.get_purchase(ctx, p.purchase_id).state is PurchaseState.COMPLETED


def test_an_async_purchase_whose_webhook_never_comes_is_completed_by_polling(ctx):
    cmd = buy(ctx, card="pm_card_async")
    p = uc.purchase_connects(ctx, cmd)
    ctx.provider.core.take_queued()  # the webhooks are lost
    ctx.clock.advance(seconds=10)
    uc.resume_pending(ctx)
    assert uc.get_purchase(ctx, p.purchase_id).state is PurchaseState.COMPLETED


def test_purchases_list_newest_first_in_pages(ctx):
    account = unique("acct")
    made = []
    for _ in range(5):
        made.append(uc.purchase_connects(ctx, buy(ctx, account=account, quantity=3)).purchase_id)
        ctx.clock.advance(seconds=1)
    page = uc.list_purchases(ctx, account, 2, None)
    assert [p.purchase_id for p in page[:2]] == made[::-1][:2] and len(page) == 3
    rest = uc.list_purchases(ctx, account, 10, (page[1].created_at, page[1].purchase_id))
    assert [p.purchase_id for p in rest] == made[::-1][2:]
    assert uc.list_purchases(ctx, unique("nobody"), 0, None) == []
