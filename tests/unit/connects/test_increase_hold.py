"""IncreaseHold: the domain rule on a Wallet, and the use case over the fakes (idempotency, authorisation)."""

from __future__ import annotations

import copy
from datetime import timedelta

import pytest
import sqlalchemy as sa

from services.billing.adapters.migrations import MIGRATIONS as BILLING_MIGRATIONS
from services.billing.adapters.revenue_events import decode_ledger_event
from services.billing.adapters.revenue_tables import revenue_transactions
from services.billing.service_layer.revenue import LedgerItem, apply_ledger_batch
from services.connects.adapters.events import ledger_event
from services.connects.domain import commands as c
from services.connects.domain.model import HOLDS, HoldStatus, LotSource, SpendReason, TransactionKind, Wallet
from services.connects.service_layer import handlers
from services.kit.db import make_engine
from services.kit.errors import DomainError, InvalidArgument
from services.kit.migrations import upgrade
from tests.conftest import unique
from tests.unit.connects.conftest import NOW, run
from tests.unit.connects.fakes import FakeLedgerStore

DAY = timedelta(days=1)


def wallet_with(*amounts_and_ages: tuple[int, int]) -> Wallet:
    """A wallet with one lot per (amount, age in days); older lots expire first."""
    w = Wallet("acct")
    for amount, age in amounts_and_ages:
        w.credit(amount=amount, source=LotSource.PURCHASE, reference="", now=NOW - age * DAY)
    w.clear_changes()
    return w


def held_by_lot(w: Wallet) -> dict[str, int]:
    return {lot.lot_id: lot.held for lot in w.lots.values() if lot.held}


def state(w: Wallet) -> tuple:
    """Everything an increase could change."""
    return (w.available, w.held, w.sequence, copy.deepcopy(w.lots), copy.deepcopy(w.holds), list(w.pending))


# ----- the domain ---------------------------------------------------------------------------------------------------


def test_an_increase_takes_the_difference_from_the_lots_that_expire_first_and_records_a_hold_entry():
    w = wallet_with((4, 30), (10, 20), (10, 10))
    oldest, middle, newest = sorted(w.lots.values(), key=lambda x: x.order)
    w.hold(hold_id="h", amount=3, reason=SpendReason.BOOST, reference="job:j/proposal:p/boost", ttl=DAY, now=NOW)
    w.clear_changes()
    tx = w.increase_hold(hold_id="h", new_amount=9, now=NOW)
    assert tx is not None
    assert (tx.kind, tx.amount, tx.hold_id, tx.spend_reason, tx.reference) == (
        TransactionKind.HOLD, 6, "h", SpendReason.BOOST, "job:j/proposal:p/boost")
    assert [(m.lot_id, m.amount) for m in tx.movements] == [(oldest.lot_id, 1), (middle.lot_id, 5)]
    assert {p.ledger_account: p.amount for p in tx.postings} == {"wallet:acct": -6, HOLDS: 6}
    assert (w.available, w.held, tx.available_after, tx.held_after) == (15, 9, 15, 9)
    hold = w.holds["h"]
    assert hold.amount == 9 and hold.status is HoldStatus.OPEN and hold.expires_at == NOW + DAY
    assert [(a.lot_id, a.amount) for a in hold.allocations] == [(oldest.lot_id, 4), (middle.lot_id, 5)]
    assert held_by_lot(w) == {oldest.lot_id: 4, middle.lot_id: 5}
    assert newest.held == 0 and newest.remaining == 10
    assert w.pending == [tx] and w.changed_holds == {"h"}


def test_a_grown_hold_captures_from_the_lots_that_expire_first_one_movement_per_lot():
    w = wallet_with((5, 30), (10, 20))
    oldest, newer = sorted(w.lots.values(), key=lambda x: x.order)
    w.hold(hold_id="h", amount=2, reason=SpendReason.BOOST, reference="", ttl=DAY, now=NOW)
    w.increase_hold(hold_id="h", new_amount=4, now=NOW)  # again from the oldest lot
    w.increase_hold(hold_id="h", new_amount=8, now=NOW)  # 1 more from it, 3 from the next
    assert [(a.lot_id, a.amount) for a in w.holds["h"].allocations] == [(oldest.lot_id, 5), (newer.lot_id, 3)]
    capture = w.capture(hold_id="h", amount=6, now=NOW)
    assert [(m.lot_id, m.amount) for m in capture.movements] == [(oldest.lot_id, 5), (newer.lot_id, 1)]
    assert {p.ledger_account: p.amount for p in capture.postings} == {HOLDS: -8, "system:revenue": 6,
                                                                      "wallet:acct": 2}
    assert (w.available, w.held) == (9, 0)


def test_a_grown_hold_released_gives_back_everything_it_holds():
    w = wallet_with((5, 30), (10, 20))
    w.hold(hold_id="h", amount=2, reason=SpendReason.PROPOSAL, reference="", ttl=DAY, now=NOW)
    w.increase_hold(hold_id="h", new_amount=12, now=NOW)
    tx = w.release(hold_id="h", now=NOW)
    assert tx.amount == 12 and sum(m.amount for m in tx.movements) == 12
    assert (w.available, w.held) == (15, 0)


def test_an_increase_the_wallet_cannot_cover_is_refused_and_changes_nothing():
    w = wallet_with((5, 30), (3, 20))
    w.hold(hold_id="h", amount=4, reason=SpendReason.BOOST, reference="", ttl=DAY, now=NOW)
    w.clear_changes()
    before = state(w)
    with pytest.raises(DomainError) as exc:
        w.increase_hold(hold_id="h", new_amount=9, now=NOW)  # 5 more needed, 4 available
    assert (exc.value.reason, exc.value.metadata) == ("INSUFFICIENT_CONNECTS", {"requested": "5", "available": "4"})
    assert state(w) == before and not w.changed_lots and not w.changed_holds


def test_connects_past_their_date_do_not_cover_an_increase_and_the_refusal_records_no_expiry():
    w = wallet_with((6, 365), (2, 10))  # the first lot is due now (no EXPIRE entry yet)
    w.hold(hold_id="h", amount=1, reason=SpendReason.BOOST, reference="", ttl=2 * DAY, now=NOW - DAY)
    w.clear_changes()
    before = state(w)
    with pytest.raises(DomainError, match="2 Connects available, 3 needed"):
        w.increase_hold(hold_id="h", new_amount=4, now=NOW)
    assert state(w) == before
    tx = w.increase_hold(hold_id="h", new_amount=3, now=NOW)
    assert tx is not None and all(m.expires_at > NOW for m in tx.movements)
    assert [t.kind for t in w.pending] == [TransactionKind.EXPIRE, TransactionKind.HOLD]
    assert w.pending[0].amount == 5, "the due lot's remaining Connects expire; its held one stays reserved"


def test_raising_a_hold_to_what_it_holds_is_a_no_op():
    w = wallet_with((10, 30))
    w.hold(hold_id="h", amount=4, reason=SpendReason.BOOST, reference="", ttl=DAY, now=NOW)
    w.clear_changes()
    before = state(w)
    assert w.increase_hold(hold_id="h", new_amount=4, now=NOW) is None
    assert state(w) == before and not w.changed_holds


def test_a_hold_cannot_be_decreased():
    w = wallet_with((10, 30))
    w.hold(hold_id="h", amount=4, reason=SpendReason.BOOST, reference="", ttl=DAY, now=NOW)
    w.clear_changes()
    before = state(w)
    with pytest.raises(DomainError) as exc:
        w.increase_hold(hold_id="h", new_amount=3, now=NOW)
    assert (exc.value.code, exc.value.reason) == ("FAILED_PRECONDITION", "HOLD_DECREASE_NOT_ALLOWED")
    assert exc.value.metadata == {"hold_id": "h", "requested": "3", "held": "4"}
    assert state(w) == before


@pytest.mark.parametrize("resolve", ["capture", "release", "expire"])
def test_a_resolved_hold_is_not_increased(resolve):
    w = wallet_with((10, 30))
    w.hold(hold_id="h", amount=4, reason=SpendReason.BOOST, reference="", ttl=DAY, now=NOW)
    if resolve == "capture":
        w.capture(hold_id="h", amount=2, now=NOW)
    elif resolve == "release":
        w.release(hold_id="h", now=NOW)
    else:
        w.expire_hold(hold_id="h", now=NOW + DAY)
    w.clear_changes()
    before = state(w)
    with pytest.raises(DomainError) as exc:
        w.increase_hold(hold_id="h", new_amount=6, now=NOW)
    status = {"capture": "CAPTURED", "release": "RELEASED", "expire": "EXPIRED"}[resolve]
    assert (exc.value.reason, exc.value.metadata["status"]) == ("HOLD_NOT_OPEN", status)
    assert state(w) == before


def test_an_increase_at_or_after_the_ttl_releases_the_hold_as_expired_and_is_refused():
    w = wallet_with((10, 30))
    w.hold(hold_id="h", amount=4, reason=SpendReason.BOOST, reference="", ttl=DAY, now=NOW)
    w.clear_changes()
    with pytest.raises(DomainError) as exc:
        w.increase_hold(hold_id="h", new_amount=6, now=NOW + DAY)
    assert exc.value.reason == "HOLD_EXPIRED"
    assert w.holds["h"].status is HoldStatus.EXPIRED
    assert [(t.kind, t.amount) for t in w.pending] == [(TransactionKind.RELEASE, 4)]
    assert (w.available, w.held) == (10, 0)


def test_an_unknown_hold_is_not_found():
    with pytest.raises(DomainError) as exc:
        wallet_with((10, 30)).increase_hold(hold_id="nope", new_amount=6, now=NOW)
    assert (exc.value.code, exc.value.reason) == ("NOT_FOUND", "HOLD_NOT_FOUND")


@pytest.mark.parametrize(("new_amount", "reason"), [(0, "AMOUNT_NOT_POSITIVE"), (-3, "AMOUNT_NOT_POSITIVE"),
                                                    (2**63, "INVALID_FIELD"), (True, "INVALID_FIELD")])
def test_a_bad_new_amount_is_refused_with_the_field(new_amount, reason):
    with pytest.raises(InvalidArgument) as exc:
        c.IncreaseHold("r", "h", new_amount)
    assert (exc.value.reason, exc.value.metadata["field"]) == (reason, "new_amount")


# ----- the use case over the fakes -----------------------------------------------------------------------------------


def funded_hold(store, amount=4, reason=SpendReason.BOOST, credit=20):
    acct = unique("a")
    run(store, c.Credit(unique("r"), acct, credit, LotSource.PLAN_GRANT))
    (held,) = run(store, c.PlaceHold(unique("r"), acct, amount, reason), caller="ads")
    return acct, held.receipt.hold_id


def test_the_same_increase_twice_is_applied_once_and_answers_the_first_receipt():
    store = FakeLedgerStore()
    acct, hold_id = funded_hold(store)
    cmd = c.IncreaseHold(unique("r"), hold_id, 9)
    (first,) = run(store, cmd, caller="ads")
    (again,) = run(store, cmd, caller="ads")
    assert first.error is None and again.replayed and again.receipt == first.receipt
    assert (first.receipt.hold_amount, first.receipt.transaction.amount) == (9, 5)
    assert (store.wallets[acct].available, store.wallets[acct].held) == (11, 9)
    (reused,) = run(store, c.IncreaseHold(cmd.request_id, hold_id, 10), caller="ads")
    assert (reused.error.code, reused.error.reason) == ("ALREADY_EXISTS", "REQUEST_ID_REUSED")


def test_a_no_op_increase_is_stored_so_its_retry_answers_the_same_after_the_hold_resolved():
    store = FakeLedgerStore()
    _, hold_id = funded_hold(store)
    cmd = c.IncreaseHold(unique("r"), hold_id, 4)
    (first,) = run(store, cmd, caller="ads")
    assert first.error is None and first.receipt.transaction is None and first.receipt.hold_amount == 4
    run(store, c.CaptureHold(unique("r"), hold_id, 4), caller="ads")
    (again,) = run(store, cmd, caller="ads")
    assert again.replayed and again.receipt == first.receipt
    (other,) = run(store, c.IncreaseHold(cmd.request_id, hold_id, 5), caller="ads")
    assert other.error.reason == "REQUEST_ID_REUSED"


def test_a_refused_increase_stores_nothing_so_a_retry_is_re_evaluated():
    store = FakeLedgerStore()
    acct, hold_id = funded_hold(store, amount=4, credit=6)
    cmd = c.IncreaseHold(unique("r"), hold_id, 10)
    (refused,) = run(store, cmd, caller="ads")
    assert refused.error.reason == "INSUFFICIENT_CONNECTS"
    run(store, c.Credit(unique("r"), acct, 4, LotSource.BONUS))
    (retry,) = run(store, cmd, caller="ads")
    assert retry.error is None and not retry.replayed and store.wallets[acct].held == 10


@pytest.mark.parametrize("reason", [SpendReason.BOOST, SpendReason.BADGE, SpendReason.PROMOTED_PROFILE])
def test_only_ads_may_increase_a_hold_for_an_ad_product_also_on_replay(reason):
    store = FakeLedgerStore()
    acct, hold_id = funded_hold(store, reason=reason)
    cmd = c.IncreaseHold(unique("r"), hold_id, 6)
    handlers.precheck(cmd, "marketplace")  # judged by the hold's reason, once it is read
    (denied,) = run(store, cmd, caller="marketplace")
    assert (denied.error.code, denied.error.reason) == ("PERMISSION_DENIED", "CALLER_NOT_ALLOWED")
    assert store.wallets[acct].held == 4
    run(store, cmd, caller="ads")
    (replay,) = run(store, cmd, caller="marketplace")
    assert replay.error.reason == "CALLER_NOT_ALLOWED" and not replay.replayed
    noop = c.IncreaseHold(unique("r"), hold_id, 6)
    run(store, noop, caller="ads")
    (noop_replay,) = run(store, noop, caller="billing")
    assert noop_replay.error.reason == "CALLER_NOT_ALLOWED", "a stored no-op keeps the hold's reason"


def test_a_proposal_hold_may_be_increased_by_other_callers():
    store = FakeLedgerStore()
    acct, hold_id = funded_hold(store, reason=SpendReason.PROPOSAL)
    (out,) = run(store, c.IncreaseHold(unique("r"), hold_id, 6), caller="marketplace")
    assert out.error is None and store.wallets[acct].held == 6


def test_an_increase_of_an_unknown_hold_is_not_found():
    (out,) = run(FakeLedgerStore(), c.IncreaseHold(unique("r"), "nope", 6))
    assert (out.error.code, out.error.reason) == ("NOT_FOUND", "HOLD_NOT_FOUND")


def test_increase_then_capture_in_one_batch_captures_the_grown_hold():
    store = FakeLedgerStore()
    acct, hold_id = funded_hold(store)
    inc, cap, rel = run(store, c.IncreaseHold(unique("r"), hold_id, 7), c.CaptureHold(unique("r"), hold_id, 7),
                        c.IncreaseHold(unique("r"), hold_id, 9), caller="ads")
    assert inc.error is None and cap.error is None and rel.error.reason == "HOLD_NOT_OPEN"
    assert (store.wallets[acct].available, store.wallets[acct].held) == (13, 0)
    kinds = [t.kind for t in store.outbox if t.hold_id == hold_id]
    assert kinds == [TransactionKind.HOLD, TransactionKind.HOLD, TransactionKind.CAPTURE]


def test_an_increase_is_published_as_a_hold_event_that_billing_records_beside_the_first(tmp_path):
    store = FakeLedgerStore()
    acct = unique("a")
    run(store, c.Credit(unique("r"), acct, 10, LotSource.PURCHASE), caller="billing")
    (held,) = run(store, c.PlaceHold(unique("r"), acct, 3, SpendReason.BOOST), caller="ads")
    run(store, c.IncreaseHold(unique("r"), held.receipt.hold_id, 8), caller="ads")
    hold_txs = [t for t in store.outbox if t.hold_id == held.receipt.hold_id]
    events = [ledger_event(t) for t in hold_txs]
    assert len({e.event_id for e in events}) == 2
    engine = make_engine(f"sqlite:///{tmp_path}/billing.db")
    upgrade(engine, BILLING_MIGRATIONS)
    with engine.begin() as conn:
        apply_ledger_batch(conn, [LedgerItem(e.event_id, "connects.ledger.v1", 0, i, decode_ledger_event(e))
                                  for i, e in enumerate(events)], group="billing-revenue")
        rows = conn.execute(sa.select(revenue_transactions.c.kind, revenue_transactions.c.amount,
                                      revenue_transactions.c.purchased_connects)
                            .where(revenue_transactions.c.kind == "HOLD")
                            .order_by(revenue_transactions.c.amount)).all()
    engine.dispose()
    assert [tuple(r) for r in rows] == [("HOLD", 3, 3), ("HOLD", 5, 5)]
