"""Revenue allocation across lots: partially spent, expired, returned, free, reversed."""

from __future__ import annotations

import random
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from services.billing.domain import revenue as r
from services.billing.domain.revenue import EntryKind, LedgerTx, Movement, Product, RevenueLot

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def credit(tx_id: str, lot: str, amount: int, purchase: str = "p1", source: str = "PURCHASE") -> LedgerTx:
    return LedgerTx(tx_id, "acct", r.CREDIT, amount, T0, source=source, reference=f"purchase:{purchase}",
                    movements=(Movement(lot, source, amount),))


def spend(tx_id: str, *moves: tuple[str, str, int], reason: str = "PROPOSAL", kind: str = r.SPEND) -> LedgerTx:
    ms = tuple(Movement(lot, origin, n) for lot, origin, n in moves)
    return LedgerTx(tx_id, "acct", kind, sum(m.amount for m in ms), T0, reason=reason, movements=ms)


class Books:
    """Applies transactions like the consumer does: lots by id, entries by transaction."""

    def __init__(self, purchases: dict[str, int]) -> None:
        self.purchases = purchases
        self.lots: dict[str, RevenueLot] = {}
        self.entries: list[r.Entry] = []

    def apply(self, tx: LedgerTx) -> r.Outcome:
        returned = [e for e in self.entries if e.transaction_id == tx.returned_transaction_id]
        out = r.apply(tx, self.lots, purchase_cents=self.purchases, returned_entries=returned)
        for lot in out.new_lots:
            self.lots[lot.lot_id] = lot
        self.entries.extend(out.entries)
        return out

    def deferred(self) -> int:
        return sum(e.deferred_delta for e in self.entries)

    def total(self, kind: EntryKind) -> int:
        return sum(e.cents for e in self.entries if e.kind is kind)


def test_a_purchase_credit_defers_its_whole_cash_in_a_new_lot():
    books = Books({"p1": 600})
    out = books.apply(credit("c1", "L1", 40))
    assert out.cash_cents == 600
    assert books.lots["L1"].cents_remaining == 600 and books.lots["L1"].connects_remaining == 40
    assert books.deferred() == 600


def test_spending_part_of_a_lot_recognises_the_floor_of_its_share_and_the_last_connect_takes_the_rest():
    books = Books({"p1": 100})  # 100 cents over 3 Connects: 33, 33, 34
    books.apply(credit("c1", "L1", 3))
    first = books.apply(spend("s1", ("L1", "PURCHASE", 1)))
    second = books.apply(spend("s2", ("L1", "PURCHASE", 1), reason="BOOST"))
    third = books.apply(spend("s3", ("L1", "PURCHASE", 1), reason="BADGE", kind=r.CAPTURE))
    assert [first.total(EntryKind.RECOGNISED)[1], second.total(EntryKind.RECOGNISED)[1],
            third.total(EntryKind.RECOGNISED)[1]] == [33, 33, 34]
    assert third.recognised() == {Product.BADGE: (1, 34)}
    assert books.deferred() == 0


def test_a_spend_across_a_partially_spent_lot_and_a_fresh_one_allocates_each_lot_separately():
    books = Books({"p1": 150, "p2": 301})
    books.apply(credit("c1", "L1", 10, "p1"))
    books.apply(credit("c2", "L2", 7, "p2"))
    books.apply(spend("s1", ("L1", "PURCHASE", 4)))           # 4*150//10 = 60
    out = books.apply(spend("s2", ("L1", "PURCHASE", 6), ("L2", "PURCHASE", 2), reason="PROMOTED_PROFILE"))
    cents = {e.lot_id: e.cents for e in out.entries}
    assert cents == {"L1": 90, "L2": 2 * 301 // 7}             # L1's last 6 take the rest of 150
    assert out.recognised() == {Product.PROMOTED_PROFILES: (8, 90 + 86)}
    assert books.lots["L2"].cents_remaining == 301 - 86


def test_expired_purchased_connects_become_breakage_and_free_ones_carry_nothing():
    books = Books({"p1": 90})
    books.apply(credit("c1", "L1", 6))
    books.apply(credit("g1", "G1", 10, source="PLAN_GRANT"))
    books.apply(spend("s1", ("G1", "PLAN_GRANT", 10), ("L1", "PURCHASE", 2)))  # 30 cents; the grant part: 0
    out = books.apply(LedgerTx("e1", "acct", r.EXPIRE, 4, T0, movements=(Movement("L1", "PURCHASE", 4),)))
    assert out.total(EntryKind.BREAKAGE) == (4, 60)
    assert books.total(EntryKind.RECOGNISED) == 30
    assert "G1" not in books.lots and books.deferred() == 0


def test_a_return_gives_back_exactly_the_cents_the_spend_recognised_as_a_new_deferred_lot():
    books = Books({"p1": 100})
    books.apply(credit("c1", "L1", 3))
    books.apply(spend("s1", ("B1", "BONUS", 2), ("L1", "PURCHASE", 2), reason="BOOST"))  # 66 cents
    ret = LedgerTx("r1", "acct", r.RETURN, 4, T0, returned_transaction_id="s1",
                   movements=(Movement("R1", "BONUS", 2), Movement("R2", "PURCHASE", 2)))
    out = books.apply(ret)
    assert [(e.kind, e.lot_id, e.cents, e.product) for e in out.entries] == \
           [(EntryKind.RETURNED, "R2", 66, Product.BOOSTS)]
    assert [lot.lot_id for lot in out.new_lots] == ["R2"]   # the free part makes no lot
    assert books.deferred() == 100
    # Spending the returned lot and the rest of the original recognises the whole purchase, no more.
    books.apply(spend("s2", ("R2", "PURCHASE", 2), ("L1", "PURCHASE", 1)))
    assert books.total(EntryKind.RECOGNISED) - books.total(EntryKind.RETURNED) == 100
    assert books.deferred() == 0


def test_a_return_listing_its_movements_in_another_order_gives_back_each_lots_own_cents():
    # Two purchases at different prices; one spend takes 1 Connect of the first and 2 of the second. A RETURN
    # whose movements come in the other order (as a ledger listing by another key sent them) pairs each
    # returned movement with the recognised entry of the same amount, not with the entry at its position.
    books = Books({"p1": 10, "p2": 90})
    books.apply(credit("c1", "L1", 1, purchase="p1"))
    books.apply(credit("c2", "L2", 3, purchase="p2"))
    books.apply(spend("s1", ("L1", "PURCHASE", 1), ("L2", "PURCHASE", 2)))  # 10 + 60 cents recognised
    ret = LedgerTx("r1", "acct", r.RETURN, 3, T0, returned_transaction_id="s1",
                   movements=(Movement("R2", "PURCHASE", 2), Movement("R1", "PURCHASE", 1)))
    out = books.apply(ret)
    assert sorted((lot.lot_id, lot.connects_total, lot.cents_total, lot.purchase_id) for lot in out.new_lots) == \
           [("R1", 1, 10, "p1"), ("R2", 2, 60, "p2")]
    assert books.deferred() == 100  # all deferred again: 30 cents left in L2, 70 back in R1 and R2
    books.apply(spend("s2", ("R1", "PURCHASE", 1), ("R2", "PURCHASE", 2), ("L2", "PURCHASE", 1), reason="BOOST"))
    assert books.total(EntryKind.RECOGNISED) - books.total(EntryKind.RETURNED) == 100
    assert books.deferred() == 0


def test_a_chargeback_reverses_the_unspent_cents_and_books_the_spent_part_as_a_loss():
    books = Books({"p1": 600})
    books.apply(credit("c1", "L1", 40))
    books.apply(spend("s1", ("L1", "PURCHASE", 15)))        # 15*600//40 = 225 recognised
    out = books.apply(LedgerTx("x1", "acct", r.REVERSE_CREDIT, 25, T0, reference="purchase:p1",
                               movements=(Movement("L1", "PURCHASE", 25),)))
    assert out.total(EntryKind.REVERSED) == (25, 375)
    assert out.total(EntryKind.LOSS) == (15, 225)
    assert out.cash_cents == 600
    assert books.deferred() == 0


def test_a_credit_without_a_known_purchase_defers_nothing():
    books = Books({})
    out = books.apply(credit("c1", "L1", 10, "ghost"))
    assert out.cash_cents == 0 and books.lots["L1"].purchase_id == "ghost"
    books.apply(spend("s1", ("L1", "PURCHASE", 10)))
    assert books.deferred() == 0


def test_a_spend_from_a_lot_billing_never_saw_counts_connects_without_cents():
    books = Books({})
    out = books.apply(spend("s1", ("nowhere", "PURCHASE", 3)))
    assert out.total(EntryKind.RECOGNISED) == (3, 0)


@settings(max_examples=200, deadline=None)
@given(cents=st.integers(0, 10**9), connects=st.integers(1, 500), seed=st.integers(0, 2**32))
def test_any_sequence_of_partial_takes_sums_to_the_purchase_exactly(cents: int, connects: int, seed: int):
    rng = random.Random(seed)
    lot = RevenueLot("L", "a", "p", connects, cents, connects, cents)
    taken = 0
    while lot.connects_remaining:
        k = rng.randint(1, lot.connects_remaining)
        before = lot.connects_remaining
        _, c = lot.take(k)
        # Never more than a fair share rounded up, never negative.
        assert 0 <= c <= -(-k * (cents - taken) // before)
        taken += c
    assert taken == cents and lot.cents_remaining == 0
