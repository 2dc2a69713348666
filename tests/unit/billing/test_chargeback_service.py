"""RecordChargeback and provider disputes through the service layer."""

from __future__ import annotations

import pytest

from services.billing.domain import commands
from services.billing.domain.errors import (
    ChargebackAlreadyRecorded,
    PaymentDeclined,
    PurchaseNotCompleted,
    PurchaseNotFound,
    RequestIdReused,
)
from services.billing.domain.purchase import PurchaseState
from services.billing.service_layer import chargebacks as uc
from services.billing.service_layer import purchases
from services.billing.service_layer.payments import EventType
from services.billing.service_layer.webhooks import handle_provider_event
from services.kit.errors import Unavailable
from tests.conftest import unique
from tests.unit.billing.support import outbox_types


def bought(ctx, card="pm_card_visa", bundle="connects-80"):
    return purchases.purchase_connects(ctx, commands.PurchaseConnects(unique("r"), unique("acct"), card,
                                                                      bundle_id=bundle))


def chargeback(purchase_id, rid=None):
    return commands.RecordChargeback(rid or unique("r"), purchase_id, unique("dp"), "fraudulent")


def test_a_chargeback_removes_the_unspent_connects_and_books_the_spent_as_loss(ctx, engine):
    p = bought(ctx)
    ctx.ledger.spent[p.credit_transaction_id] = 25
    cb = uc.record_chargeback(ctx, chargeback(p.purchase_id))
    assert (cb.state, cb.connects_removed, cb.connects_already_spent, cb.loss_cents) == ("RECORDED", 55, 25, 375)
    assert ctx.ledger.balances[p.account_id] == 25
    assert purchases.get_purchase(ctx, p.purchase_id).state is PurchaseState.CHARGED_BACK
    assert outbox_types(engine, p.account_id) == ["PurchaseCompleted", "ChargebackRecorded"]


def test_a_retried_chargeback_returns_the_first_and_another_is_refused(ctx):
    p = bought(ctx)
    cmd = chargeback(p.purchase_id)
    first = uc.record_chargeback(ctx, cmd)
    assert uc.record_chargeback(ctx, cmd) == first
    with pytest.raises(ChargebackAlreadyRecorded):
        uc.record_chargeback(ctx, chargeback(p.purchase_id))
    with pytest.raises(RequestIdReused):
        uc.record_chargeback(ctx, commands.RecordChargeback(cmd.request_id, p.purchase_id, "other", ""))
    assert len(ctx.ledger.reversed) == 1


def test_a_chargeback_of_an_unknown_or_failed_purchase_is_refused(ctx):
    with pytest.raises(PurchaseNotFound):
        uc.record_chargeback(ctx, chargeback("nope"))
    with pytest.raises(PaymentDeclined) as exc:
        bought(ctx, card="pm_card_declined")
    with pytest.raises(PurchaseNotCompleted):
        uc.record_chargeback(ctx, chargeback(exc.value.metadata["purchase_id"]))
    assert ctx.ledger.reversed == set()


def test_the_ledger_down_leaves_the_chargeback_pending_and_the_resumer_claws_back_once(ctx):
    p = bought(ctx)
    ctx.ledger.down = 1
    cmd = chargeback(p.purchase_id)
    with pytest.raises(Unavailable) as exc:
        uc.record_chargeback(ctx, cmd)
    assert exc.value.reason == "LEDGER_UNAVAILABLE"
    ctx.clock.advance(seconds=10)
    assert uc.resume_pending(ctx) == 1
    done = uc.record_chargeback(ctx, cmd)
    assert (done.state, done.connects_removed) == ("RECORDED", 80)
    assert uc.resume_pending(ctx) == 0


def test_a_provider_dispute_delivered_twice_records_one_chargeback(ctx):
    p = bought(ctx, card="pm_card_dispute")
    ctx.provider.core.take_queued()
    ctx.provider.core.dispute(p.payment_intent_id)
    events = ctx.provider.core.take_queued()
    assert [e.type for e in events] == [EventType.DISPUTE_CREATED] * 2
    outcomes = [handle_provider_event(ctx, e) for e in events]
    assert outcomes == ["APPLIED", "DUPLICATE"]
    with ctx.uow() as uow:
        cb = uow.chargebacks.for_purchase(p.purchase_id)
    assert (cb.state, cb.connects_removed) == ("RECORDED", 80)
    assert len(ctx.ledger.reversed) == 1
