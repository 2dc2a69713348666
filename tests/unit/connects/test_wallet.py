"""Domain rules of the Connects wallet: lot order, expiry, holds, returns, the journal."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.connects.domain import errors
from services.connects.domain.model import (
    BREAKAGE,
    HOLDS,
    ISSUANCE,
    REVENUE,
    SALES,
    HoldStatus,
    Lot,
    LotSource,
    Returnable,
    ReturnReason,
    SpendReason,
    TransactionKind,
    Wallet,
    job_of,
    wallet_account,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)


def wallet_with(*credits: tuple[int, LotSource, datetime]) -> Wallet:
    w = Wallet("acct-1")
    for amount, source, at in credits:
        w.credit(amount=amount, source=source, reference="", now=at)
    return w


def balances(w: Wallet) -> dict[str, int]:
    out: dict[str, int] = {}
    for tx in w.pending:
        for p in tx.postings:
            out[p.ledger_account] = out.get(p.ledger_account, 0) + p.amount
    return out


def test_credit_creates_a_lot_expiring_one_year_later_from_sales_for_purchases():
    w = Wallet("acct-1")
    tx = w.credit(amount=40, source=LotSource.PURCHASE, reference="purchase:1", now=T0)
    (lot,) = w.lots.values()
    assert (lot.amount, lot.remaining, lot.source) == (40, 40, LotSource.PURCHASE)
    assert lot.expires_at == T0 + timedelta(days=365)
    assert {p.ledger_account: p.amount for p in tx.postings} == {SALES: -40, wallet_account("acct-1"): 40}


def test_grants_and_bonuses_come_from_issuance():
    w = Wallet("acct-1")
    tx = w.credit(amount=10, source=LotSource.PLAN_GRANT, reference="", now=T0)
    assert {p.ledger_account for p in tx.postings} == {ISSUANCE, wallet_account("acct-1")}


def test_spend_takes_the_oldest_lot_first_and_records_which_lots():
    w = wallet_with((5, LotSource.BONUS, T0), (10, LotSource.PURCHASE, T0 + DAY))
    tx = w.spend(amount=7, reason=SpendReason.PROPOSAL, reference="job:j1", now=T0 + 2 * DAY)
    assert [(m.source, m.amount) for m in tx.movements] == [(LotSource.BONUS, 5), (LotSource.PURCHASE, 2)]
    assert w.available == 8
    assert {p.ledger_account: p.amount for p in tx.postings} == {wallet_account("acct-1"): -7, REVENUE: 7}


def test_a_return_lot_keeping_an_earlier_expiry_is_spent_before_newer_lots():
    w = wallet_with((10, LotSource.PURCHASE, T0))
    spend = w.spend(amount=4, reason=SpendReason.PROPOSAL, reference="job:j1", now=T0 + DAY)
    w.credit(amount=10, source=LotSource.PURCHASE, reference="", now=T0 + 2 * DAY)
    w.return_connects(original=Returnable(spend, False), reason=ReturnReason.JOB_REMOVED_TOS, now=T0 + 3 * DAY)
    tx = w.spend(amount=12, reason=SpendReason.PROPOSAL, reference="", now=T0 + 4 * DAY)
    assert [m.expires_at for m in tx.movements] == [T0 + 365 * DAY, T0 + 365 * DAY, T0 + 367 * DAY]


def test_spending_more_than_available_is_refused_and_changes_nothing():
    w = wallet_with((5, LotSource.BONUS, T0))
    before = len(w.pending)
    with pytest.raises(errors.InsufficientConnects) as exc:
        w.spend(amount=6, reason=SpendReason.PROPOSAL, reference="", now=T0)
    assert exc.value.reason == "INSUFFICIENT_CONNECTS" and exc.value.code == "FAILED_PRECONDITION"
    assert w.available == 5 and len(w.pending) == before


def test_lots_past_their_date_leave_through_an_expire_entry_to_breakage():
    w = wallet_with((5, LotSource.PURCHASE, T0), (3, LotSource.BONUS, T0 + 10 * DAY))
    tx = w.expire_due_lots(T0 + 365 * DAY)
    assert tx is not None and tx.kind is TransactionKind.EXPIRE and tx.amount == 5
    assert {p.ledger_account: p.amount for p in tx.postings} == {wallet_account("acct-1"): -5, BREAKAGE: 5}
    assert w.available == 3
    assert w.expire_due_lots(T0 + 365 * DAY) is None, "expiring twice changes nothing"


def test_spending_after_expiry_cannot_use_expired_connects():
    w = wallet_with((5, LotSource.PURCHASE, T0))
    with pytest.raises(errors.InsufficientConnects):
        w.spend(amount=1, reason=SpendReason.PROPOSAL, reference="", now=T0 + 366 * DAY)
    assert [tx.kind for tx in w.pending] == [TransactionKind.CREDIT, TransactionKind.EXPIRE]


def test_expiring_within_30_days_counts_only_lots_due_in_the_window():
    w = wallet_with((5, LotSource.PURCHASE, T0), (7, LotSource.BONUS, T0 + 60 * DAY))
    now = T0 + 340 * DAY
    assert w.expiring_within(now) == 5
    assert w.available_at(T0 + 365 * DAY) == 7


def test_hold_reserves_oldest_first_and_leaves_available_at_once():
    w = wallet_with((5, LotSource.BONUS, T0), (10, LotSource.PURCHASE, T0 + DAY))
    tx = w.hold(hold_id="h1", amount=8, reason=SpendReason.BOOST, reference="job:j", ttl=7 * DAY, now=T0 + DAY)
    assert (w.available, w.held) == (7, 8)
    assert [m.amount for m in tx.movements] == [5, 3]
    assert {p.ledger_account: p.amount for p in tx.postings} == {wallet_account("acct-1"): -8, HOLDS: 8}


def test_partial_capture_spends_part_and_releases_the_rest():
    w = wallet_with((10, LotSource.PURCHASE, T0))
    w.hold(hold_id="h1", amount=8, reason=SpendReason.BOOST, reference="", ttl=DAY, now=T0)
    tx = w.capture(hold_id="h1", amount=5, now=T0)
    assert (w.available, w.held) == (5, 0)
    assert {p.ledger_account: p.amount for p in tx.postings} == {
        HOLDS: -8, REVENUE: 5, wallet_account("acct-1"): 3}
    assert w.holds["h1"].status is HoldStatus.CAPTURED and w.holds["h1"].captured == 5


def test_capture_above_the_hold_is_refused():
    w = wallet_with((10, LotSource.PURCHASE, T0))
    w.hold(hold_id="h1", amount=4, reason=SpendReason.BOOST, reference="", ttl=DAY, now=T0)
    with pytest.raises(errors.CaptureExceedsHold):
        w.capture(hold_id="h1", amount=5, now=T0)
    assert w.holds["h1"].status is HoldStatus.OPEN and w.held == 4


@pytest.mark.parametrize("first", ["capture", "release"])
@pytest.mark.parametrize("second", ["capture", "release"])
def test_a_hold_resolves_only_once(first, second):
    w = wallet_with((10, LotSource.PURCHASE, T0))
    w.hold(hold_id="h1", amount=4, reason=SpendReason.BOOST, reference="", ttl=DAY, now=T0)
    act = {"capture": lambda: w.capture(hold_id="h1", amount=4, now=T0),
           "release": lambda: w.release(hold_id="h1", now=T0)}
    act[first]()
    with pytest.raises(errors.HoldNotOpen):
        act[second]()
    assert w.available + w.held == 10 - (4 if first == "capture" else 0)


def test_unknown_hold_is_not_found():
    with pytest.raises(errors.HoldNotFound) as exc:
        Wallet("a").release(hold_id="nope", now=T0)
    assert exc.value.code == "NOT_FOUND"


def test_a_hold_past_its_ttl_is_expired_and_cannot_be_captured():
    w = wallet_with((10, LotSource.PURCHASE, T0))
    w.hold(hold_id="h1", amount=4, reason=SpendReason.BOOST, reference="", ttl=DAY, now=T0)
    with pytest.raises(errors.HoldExpired):
        w.capture(hold_id="h1", amount=4, now=T0 + 2 * DAY)
    assert w.holds["h1"].status is HoldStatus.EXPIRED and w.available == 10


def test_expire_hold_is_a_no_op_before_the_ttl_and_when_repeated():
    w = wallet_with((10, LotSource.PURCHASE, T0))
    w.hold(hold_id="h1", amount=4, reason=SpendReason.BOOST, reference="", ttl=DAY, now=T0)
    assert w.expire_hold(hold_id="h1", now=T0) is None
    assert w.expire_hold(hold_id="h1", now=T0 + DAY) is not None
    assert w.expire_hold(hold_id="h1", now=T0 + DAY) is None


def test_held_part_of_an_expired_lot_stays_reserved_and_expires_when_released():
    w = wallet_with((10, LotSource.PURCHASE, T0))
    w.hold(hold_id="h1", amount=4, reason=SpendReason.BOOST, reference="", ttl=90 * DAY, now=T0 + 300 * DAY)
    w.expire_due_lots(T0 + 366 * DAY)
    assert (w.available, w.held) == (0, 4)
    w.release(hold_id="h1", now=T0 + 367 * DAY)
    assert (w.available, w.held) == (0, 0)
    assert [tx.kind for tx in w.pending][-3:] == [
        TransactionKind.EXPIRE, TransactionKind.RELEASE, TransactionKind.EXPIRE]


def test_captured_part_of_an_expired_lot_can_still_be_spent():
    w = wallet_with((10, LotSource.PURCHASE, T0))
    w.hold(hold_id="h1", amount=4, reason=SpendReason.BOOST, reference="", ttl=90 * DAY, now=T0 + 300 * DAY)
    tx = w.capture(hold_id="h1", amount=3, now=T0 + 366 * DAY)
    assert tx.amount == 3 and (w.available, w.held) == (0, 0)


def test_return_of_a_proposal_spend_credits_return_lots_with_the_original_expiry():
    w = wallet_with((3, LotSource.BONUS, T0), (10, LotSource.PURCHASE, T0 + DAY))
    spend = w.spend(amount=5, reason=SpendReason.PROPOSAL, reference="job:j1/proposal:p1", now=T0 + DAY)
    tx = w.return_connects(original=Returnable(spend, False), reason=ReturnReason.JOB_CANCELLED_BEFORE_CONTRACT,
                           now=T0 + 2 * DAY)
    assert tx.kind is TransactionKind.RETURN and tx.amount == 5 and w.available == 13
    returned = [w.lots[m.lot_id] for m in tx.movements]
    assert [(lot.source, lot.origin_source, lot.amount, lot.expires_at) for lot in returned] == [
        (LotSource.RETURN, LotSource.BONUS, 3, T0 + 365 * DAY),
        (LotSource.RETURN, LotSource.PURCHASE, 2, T0 + 366 * DAY)]
    assert {p.ledger_account: p.amount for p in tx.postings} == {REVENUE: -5, wallet_account("acct-1"): 5}


@pytest.mark.parametrize("reason", [ReturnReason.PROPOSAL_REJECTED, ReturnReason.HIRED_OTHER,
                                    ReturnReason.JOB_EXPIRED, ReturnReason.WITHDRAWN])
def test_rejected_hired_other_expired_and_withdrawn_return_nothing(reason):
    w = wallet_with((10, LotSource.PURCHASE, T0))
    spend = w.spend(amount=4, reason=SpendReason.PROPOSAL, reference="job:j1", now=T0)
    with pytest.raises(errors.NotReturnable):
        w.return_connects(original=Returnable(spend, False), reason=reason, now=T0)
    assert w.available == 6


def test_badge_spends_and_credits_are_not_returnable():
    w = wallet_with((10, LotSource.PURCHASE, T0))
    badge = w.spend(amount=1, reason=SpendReason.BADGE, reference="", now=T0)
    with pytest.raises(errors.TransactionNotReturnable):
        w.return_connects(original=Returnable(badge, False), reason=ReturnReason.JOB_REMOVED_TOS, now=T0)
    credit = w.pending[0]
    with pytest.raises(errors.TransactionNotReturnable):
        w.return_connects(original=Returnable(credit, False), reason=ReturnReason.JOB_REMOVED_TOS, now=T0)


def test_a_transaction_is_returned_at_most_once():
    w = wallet_with((10, LotSource.PURCHASE, T0))
    spend = w.spend(amount=4, reason=SpendReason.PROPOSAL, reference="job:j1", now=T0)
    with pytest.raises(errors.AlreadyReturned):
        w.return_connects(original=Returnable(spend, True), reason=ReturnReason.JOB_REMOVED_TOS, now=T0)


def test_boost_capture_returns_the_captured_amount_only():
    w = wallet_with((10, LotSource.PURCHASE, T0))
    w.hold(hold_id="h1", amount=6, reason=SpendReason.BOOST, reference="job:j1/proposal:p", ttl=DAY, now=T0)
    capture = w.capture(hold_id="h1", amount=4, now=T0)
    tx = w.return_connects(original=Returnable(capture, False), reason=ReturnReason.JOB_REMOVED_TOS, now=T0)
    assert tx.amount == 4 and w.available == 10


def test_returned_connects_past_their_original_expiry_expire_through_an_entry():
    w = wallet_with((10, LotSource.PURCHASE, T0))
    spend = w.spend(amount=4, reason=SpendReason.PROPOSAL, reference="job:j1", now=T0)
    w.return_connects(original=Returnable(spend, False), reason=ReturnReason.JOB_REMOVED_TOS,
                      now=T0 + 400 * DAY)
    assert w.available == 0
    assert balances(w)[BREAKAGE] == 10


def test_every_transaction_balances_and_the_wallet_account_equals_available():
    w = wallet_with((10, LotSource.PURCHASE, T0), (5, LotSource.BONUS, T0))
    w.hold(hold_id="h", amount=3, reason=SpendReason.BOOST, reference="", ttl=DAY, now=T0)
    w.spend(amount=2, reason=SpendReason.PROPOSAL, reference="", now=T0)
    b = balances(w)
    assert sum(b.values()) == 0
    assert b[wallet_account("acct-1")] == w.available == 10 and b[HOLDS] == w.held == 3


def test_sequence_numbers_follow_the_accounts_journal():
    w = wallet_with((10, LotSource.PURCHASE, T0))
    w.spend(amount=1, reason=SpendReason.PROPOSAL, reference="", now=T0)
    assert [tx.sequence for tx in w.pending] == [1, 2]


@pytest.mark.parametrize(("reference", "job"), [("job:j1", "j1"), ("job:j1/proposal:p2", "j1"),
                                                ("purchase:1", None), ("job:", None), ("", None)])
def test_reference_convention_names_the_job(reference, job):
    assert job_of(reference) == job


def test_a_transaction_lists_its_movements_as_read_back_and_a_return_pairs_them_in_that_order():
    # Two lots expiring together: "z-old" was issued first, so it is spent first, but it lists after "a-new"
    # (the store reads movements back by expiry, then lot id). The spend lists them as read back; its RETURN,
    # built from it, returns movement i i-th, and its new lots' ids keep that order when read back too.
    expiry = T0 + 365 * DAY
    w = Wallet.restore("acct-1", [
        Lot("z-old", "acct-1", LotSource.PURCHASE, LotSource.PURCHASE, 2, 2, 0, T0, expiry),
        Lot("a-new", "acct-1", LotSource.PURCHASE, LotSource.PURCHASE, 5, 5, 0, T0 + DAY, expiry)])
    spend = w.spend(amount=4, reason=SpendReason.PROPOSAL, reference="job:1", now=T0 + 2 * DAY)
    assert [(m.lot_id, m.amount) for m in spend.movements] == [("a-new", 2), ("z-old", 2)]  # spent z-old first
    assert list(spend.movements) == sorted(spend.movements, key=lambda m: m.listing_order)
    for _ in range(20):  # new lot ids are random: the order must not depend on them
        ret = Wallet.restore("acct-1", []).return_connects(
            original=Returnable(spend, already_returned=False), reason=ReturnReason.JOB_CANCELLED_BEFORE_CONTRACT,
            now=T0 + 3 * DAY)
        assert [(m.amount, m.expires_at) for m in ret.movements] == [(m.amount, m.expires_at) for m in spend.movements]
        assert list(ret.movements) == sorted(ret.movements, key=lambda m: m.listing_order)
