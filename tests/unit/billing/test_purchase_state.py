"""The purchase state machine: terminal states never change; a captured payment is never un-captured."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from services.billing.domain import catalog
from services.billing.domain.purchase import PaymentStatus, Purchase, PurchaseState

NOW = datetime(2026, 5, 1, tzinfo=UTC)


def new() -> Purchase:
    return Purchase.new(request_id="r", fingerprint="f", account_id="a", item=catalog.price(quantity=10, agency=False),
                        payment_method="pm_card_visa", now=NOW)


def test_a_new_purchase_is_pending_and_needs_its_charge():
    p = new()
    assert (p.state, p.payment_status, p.needs_charge, p.needs_credit) == (PurchaseState.PENDING,
                                                                           PaymentStatus.UNKNOWN, True, False)


def test_captured_then_credited_completes():
    p = new().payment_captured("pi_1", "ch_1", NOW)
    assert p.needs_credit and not p.needs_charge
    done = p.credited("tx1", NOW)
    assert (done.state, done.credit_transaction_id, done.finished_at) == (PurchaseState.COMPLETED, "tx1", NOW)


def test_a_late_failure_after_the_capture_is_not_applied():
    p = new().payment_captured("pi_1", "ch_1", NOW)
    assert p.payment_failed("pi_1", "PAYMENT_DECLINED", NOW) == p
    done = p.credited("tx1", NOW)
    assert done.payment_failed("pi_1", "PAYMENT_DECLINED", NOW) == done


def test_a_declined_purchase_fails_and_a_late_success_does_not_revive_it():
    failed = new().payment_failed("pi_1", "PAYMENT_DECLINED", NOW)
    assert (failed.state, failed.failure_reason) == (PurchaseState.FAILED, "PAYMENT_DECLINED")
    assert failed.payment_captured("pi_1", "ch_1", NOW) == failed
    assert failed.credited("tx1", NOW) == failed


def test_processing_waits_for_the_capture_and_a_late_processing_changes_nothing():
    p = new().payment_processing("pi_1", "")
    assert p.awaiting_capture and not p.needs_credit
    captured = p.payment_captured("pi_1", "ch_1", NOW)
    assert captured.payment_processing("pi_1", "") == captured


def test_a_credit_is_not_taken_before_the_capture():
    p = new()
    assert p.credited("tx1", NOW) == p


def test_only_a_completed_purchase_is_charged_back():
    assert new().charged_back().state is PurchaseState.PENDING
    done = new().payment_captured("pi", "ch", NOW).credited("tx", NOW)
    assert done.charged_back().state is PurchaseState.CHARGED_BACK


EVENTS = st.sampled_from(["processing", "captured", "failed", "credited", "refused"])


@given(st.lists(EVENTS, max_size=12))
def test_whatever_arrives_in_whatever_order_a_terminal_state_never_changes(seq):
    p = new()
    terminal = None
    for step in seq:
        p = {"processing": lambda x: x.payment_processing("pi", ""),
             "captured": lambda x: x.payment_captured("pi", "ch", NOW),
             "failed": lambda x: x.payment_failed("pi", "PAYMENT_DECLINED", NOW),
             "credited": lambda x: x.credited("tx", NOW),
             "refused": lambda x: x.credit_refused("CREDIT_REFUSED", NOW)}[step](p)
        if terminal is not None:
            assert p == terminal
        elif p.terminal:
            terminal = p
        # Completed only after a capture; a credit never without one.
        if p.state is PurchaseState.COMPLETED:
            assert p.payment_status is PaymentStatus.CAPTURED and p.credit_transaction_id
