"""Property tests: random sequences of operations keep every ledger invariant."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from services.connects.domain.model import (
    HOLDS,
    HoldStatus,
    LotSource,
    Returnable,
    ReturnReason,
    SpendReason,
    TransactionKind,
    Wallet,
    wallet_account,
)
from services.kit.errors import DomainError

T0 = datetime(2026, 1, 1, tzinfo=UTC)
amounts = st.integers(min_value=1, max_value=60)


class WalletMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.wallet = Wallet("acct")
        self.now = T0
        self.journal: list = []
        self.returned: set[str] = set()
        self.hold_ids: list[str] = []

    def _do(self, fn, *args, **kwargs) -> None:
        try:
            fn(*args, **kwargs)
        except DomainError as exc:
            assert exc.code in {"FAILED_PRECONDITION", "NOT_FOUND"}
        finally:
            self.journal.extend(self.wallet.take_pending())

    @rule(days=st.integers(min_value=0, max_value=200))
    def time_passes(self, days):
        self.now += timedelta(days=days, seconds=1)

    @rule(amount=amounts, source=st.sampled_from(list(LotSource)))
    def credit(self, amount, source):
        self._do(self.wallet.credit, amount=amount, source=source, reference="", now=self.now)

    @rule(amount=amounts, reason=st.sampled_from(list(SpendReason)))
    def spend(self, amount, reason):
        self._do(self.wallet.spend, amount=amount, reason=reason, reference="job:j", now=self.now)

    @rule(amount=amounts, ttl_days=st.integers(min_value=1, max_value=30))
    def hold(self, amount, ttl_days):
        hold_id = f"h{len(self.hold_ids)}"
        self.hold_ids.append(hold_id)
        self._do(self.wallet.hold, hold_id=hold_id, amount=amount, reason=SpendReason.BOOST, reference="job:j",
                 ttl=timedelta(days=ttl_days), now=self.now)

    @rule(pick=st.integers(min_value=0), amount=amounts)
    def capture(self, pick, amount):
        if self.hold_ids:
            self._do(self.wallet.capture, hold_id=self.hold_ids[pick % len(self.hold_ids)], amount=amount,
                     now=self.now)

    @rule(pick=st.integers(min_value=0), delta=st.integers(min_value=-5, max_value=60))
    def increase_hold(self, pick, delta):
        if not self.hold_ids:
            return
        # Mostly holds that exist (open ones first, so increases succeed often); now and then an unknown one.
        known = sorted(self.wallet.holds, key=lambda h: self.wallet.holds[h].status is not HoldStatus.OPEN)
        pool = known[:1 + pick % 3] if known and pick % 5 else self.hold_ids
        hold_id = pool[pick % len(pool)]
        hold = self.wallet.holds.get(hold_id)
        held_before = hold.amount if hold else 0
        new_amount = max(1, held_before + delta)
        available, held, n = self.wallet.available, self.wallet.held, len(self.journal)
        self._do(self.wallet.increase_hold, hold_id=hold_id, new_amount=new_amount, now=self.now)
        recorded = self.journal[n:]
        grew = [tx for tx in recorded if tx.kind is TransactionKind.HOLD]
        if grew:
            (tx,) = grew
            assert tx.hold_id == hold_id and tx.amount == new_amount - held_before
            assert self.wallet.holds[hold_id].amount == new_amount
            assert self.wallet.held == held + tx.amount
        elif not recorded:
            assert (self.wallet.available, self.wallet.held) == (available, held), "a refusal changes nothing"
            if hold is not None:
                assert hold.amount == held_before

    @rule(pick=st.integers(min_value=0))
    def release(self, pick):
        if self.hold_ids:
            self._do(self.wallet.release, hold_id=self.hold_ids[pick % len(self.hold_ids)], now=self.now)

    @rule(pick=st.integers(min_value=0))
    def expire_hold(self, pick):
        if self.hold_ids:
            self._do(self.wallet.expire_hold, hold_id=self.hold_ids[pick % len(self.hold_ids)], now=self.now)

    @rule()
    def expire_lots(self):
        self._do(self.wallet.expire_due_lots, self.now)

    @rule(pick=st.integers(min_value=0), reason=st.sampled_from(list(ReturnReason)))
    def return_connects(self, pick, reason):
        spends = [tx for tx in self.journal if tx.kind in (TransactionKind.SPEND, TransactionKind.CAPTURE)]
        if not spends:
            return
        tx = spends[pick % len(spends)]
        before = len(self.journal)
        self._do(self.wallet.return_connects, original=Returnable(tx, tx.transaction_id in self.returned),
                 reason=reason, now=self.now)
        if any(t.kind is TransactionKind.RETURN for t in self.journal[before:]):
            self.returned.add(tx.transaction_id)

    @invariant()
    def no_negative_wallet_or_lot(self):
        w = self.wallet
        assert w.available >= 0 and w.held >= 0
        for lot in w.lots.values():
            assert lot.remaining >= 0 and lot.held >= 0 and lot.expired >= 0
            assert lot.remaining + lot.held + lot.expired <= lot.amount

    @invariant()
    def every_transaction_balances_and_the_journal_sums_to_zero(self):
        totals: Counter[str] = Counter()
        for tx in self.journal:
            assert sum(p.amount for p in tx.postings) == 0
            for p in tx.postings:
                totals[p.ledger_account] += p.amount
        assert sum(totals.values()) == 0
        assert totals[wallet_account("acct")] == self.wallet.available
        assert totals[HOLDS] == self.wallet.held

    @invariant()
    def available_plus_held_equals_the_sum_of_lots(self):
        w = self.wallet
        assert w.available + w.held == sum(lot.remaining + lot.held for lot in w.lots.values())
        open_holds = [h for h in w.holds.values() if h.status is HoldStatus.OPEN]
        assert w.held == sum(h.amount for h in open_holds)

    @invariant()
    def each_lot_holds_what_the_open_holds_allocate_from_it(self):
        allocated: Counter[str] = Counter()
        for hold in self.wallet.holds.values():
            assert sum(a.amount for a in hold.allocations) == hold.amount
            assert len({a.lot_id for a in hold.allocations}) == len(hold.allocations), "one allocation per lot"
            if hold.status is HoldStatus.OPEN:
                for a in hold.allocations:
                    allocated[a.lot_id] += a.amount
        assert {lot_id: lot.held for lot_id, lot in self.wallet.lots.items() if lot.held} == dict(allocated)

    @invariant()
    def each_hold_resolves_at_most_once(self):
        resolutions = Counter(tx.hold_id for tx in self.journal
                              if tx.kind in (TransactionKind.CAPTURE, TransactionKind.RELEASE))
        assert all(n == 1 for n in resolutions.values())
        for hold_id, hold in self.wallet.holds.items():
            assert (hold.status is not HoldStatus.OPEN) == (resolutions[hold_id] == 1)

    @invariant()
    def nothing_past_its_date_is_spent_or_held_anew(self):
        for tx in self.journal:
            if tx.kind in (TransactionKind.SPEND, TransactionKind.HOLD):
                assert all(m.expires_at > tx.occurred_at for m in tx.movements)

    @invariant()
    def a_transaction_is_returned_at_most_once(self):
        returns = Counter(tx.returned_transaction_id for tx in self.journal if tx.kind is TransactionKind.RETURN)
        assert all(n == 1 for n in returns.values())

    @invariant()
    def lot_movements_add_up_to_the_amount(self):
        for tx in self.journal:
            assert sum(m.amount for m in tx.movements) == tx.amount


TestWalletProperties = WalletMachine.TestCase
TestWalletProperties.settings = settings(max_examples=300, stateful_step_count=40, deadline=None)
