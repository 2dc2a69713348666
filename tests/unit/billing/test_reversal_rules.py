"""Chargeback rules: unspent Connects are removed, spent ones are a loss; the money splits exactly."""

from __future__ import annotations

from datetime import UTC, datetime
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.billing.domain.chargeback import Chargeback, reversal

NOW = datetime(2026, 5, 1, tzinfo=UTC)


def test_an_unspent_purchase_is_reversed_in_full_with_no_loss():
    r = reversal(connects=40, amount_cents=600, removed=40)
    assert (r.connects_removed, r.connects_already_spent, r.loss_cents, r.reversed_cents) == (40, 0, 0, 600)


def test_a_fully_spent_purchase_is_all_loss():
    r = reversal(connects=40, amount_cents=600, removed=0)
    assert (r.connects_already_spent, r.loss_cents, r.reversed_cents) == (40, 600, 0)


def test_a_partly_spent_purchase_books_the_spent_part_at_its_price():
    r = reversal(connects=80, amount_cents=1200, removed=55)
    assert (r.connects_already_spent, r.loss_cents, r.reversed_cents) == (25, 375, 825)


@given(connects=st.integers(1, 10_000), data=st.data())
def test_loss_plus_reversed_is_the_amount_and_matches_the_exact_share(connects, data):
    amount = data.draw(st.integers(0, 10**9))
    removed = data.draw(st.integers(0, connects))
    r = reversal(connects=connects, amount_cents=amount, removed=removed)
    assert r.loss_cents + r.reversed_cents == amount
    exact = Fraction(amount * (connects - removed), connects)
    assert abs(r.loss_cents - exact) <= Fraction(1, 2)


@pytest.mark.parametrize("removed", [-1, 41])
def test_the_ledger_cannot_remove_more_than_was_bought_or_less_than_nothing(removed):
    with pytest.raises(ValueError):
        reversal(connects=40, amount_cents=600, removed=removed)


def test_a_chargeback_is_booked_once_whatever_is_reported_later():
    cb = Chargeback("cb1", "r1", "f", "p1", "acct", 600, "USD", 40, "tx1", "dp_1", "fraudulent", NOW)
    booked = cb.recorded(removed=30, transaction_id="rev1", now=NOW)
    assert (booked.state, booked.connects_removed, booked.loss_cents) == ("RECORDED", 30, 150)
    assert booked.recorded(removed=40, transaction_id="rev2", now=NOW) == booked
