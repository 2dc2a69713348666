"""Revenue recognition: purchase cash is deferred, then recognised, broken or reversed, lot by lot.

Pure Python. The ledger says which lots each transaction moved; billing keeps,
for every lot whose Connects were bought (source PURCHASE, or a RETURN lot of
purchased Connects), the deferred Connects and cents still in it. A ledger
transaction is turned into journal entries here:

- CREDIT (PURCHASE): a new lot holding the purchase's cash; a CASH entry.
- SPEND and CAPTURE: cents of the purchased lots consumed become RECOGNISED
  revenue of the product the Connects paid for.
- EXPIRE: cents of the purchased lots expired become BREAKAGE.
- RETURN: the Connects come back as new lots keeping their origin; the cents
  the returned transaction recognised go back to deferred (RETURNED entries,
  which reduce the product's recognised revenue).
- REVERSE_CREDIT (a chargeback's claw-back): the unspent cents are REVERSED
  out of deferred; the rest of the purchase's cash, already recognised or
  broken, is a LOSS.
- HOLD and RELEASE move nothing: held Connects are still unspent (deferred).
- Free Connects (plan grants, bonuses and their returns) carry no revenue.

Allocation is exact integer arithmetic: taking k of a lot's n deferred
Connects takes floor(k * cents / n) of its deferred cents, and the last
Connect takes whatever is left, so a lot's cents always sum to the purchase.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

PURCHASE_REFERENCE_PREFIX = "purchase:"

CREDIT, SPEND, HOLD, CAPTURE, RELEASE, RETURN, EXPIRE = (
    "CREDIT", "SPEND", "HOLD", "CAPTURE", "RELEASE", "RETURN", "EXPIRE")
REVERSE_CREDIT = "REVERSAL"  # the ledger's REVERSAL: ReverseCredit's claw-back
PURCHASE = "PURCHASE"


class EntryKind(enum.StrEnum):
    """What a journal entry did to deferred revenue."""

    CASH = "CASH"                # + deferred: a purchase credited
    RECOGNISED = "RECOGNISED"    # - deferred, + product revenue: purchased Connects spent
    RETURNED = "RETURNED"        # + deferred, - product revenue: spent Connects returned
    BREAKAGE = "BREAKAGE"        # - deferred, + breakage: purchased Connects expired
    REVERSED = "REVERSED"        # - deferred: unspent Connects clawed back by a chargeback
    LOSS = "LOSS"                # the chargeback's already-recognised (or broken) cash


DEFERRED_SIGN = {EntryKind.CASH: 1, EntryKind.RETURNED: 1, EntryKind.RECOGNISED: -1, EntryKind.BREAKAGE: -1,
                 EntryKind.REVERSED: -1, EntryKind.LOSS: 0}


class Product(enum.StrEnum):
    """What spent Connects paid for (billing.proto Product without its prefix)."""

    PROPOSALS = "PROPOSALS"
    BOOSTS = "BOOSTS"
    BADGE = "BADGE"
    PROMOTED_PROFILES = "PROMOTED_PROFILES"


PRODUCT_OF_REASON = {"PROPOSAL": Product.PROPOSALS, "BOOST": Product.BOOSTS, "BADGE": Product.BADGE,
                     "PROMOTED_PROFILE": Product.PROMOTED_PROFILES}


def purchase_id_of(reference: str) -> str | None:
    """`purchase:<id>` -> `<id>`; None for any other reference."""
    if reference.startswith(PURCHASE_REFERENCE_PREFIX) and len(reference) > len(PURCHASE_REFERENCE_PREFIX):
        return reference[len(PURCHASE_REFERENCE_PREFIX):]
    return None


@dataclass(frozen=True)
class Movement:
    """Connects a ledger transaction took from (or gave to) one lot."""

    lot_id: str
    origin: str          # the lot's origin source: PURCHASE lots (and their returns) carry revenue
    amount: int

    @property
    def purchased(self) -> bool:
        return self.origin == PURCHASE


@dataclass(frozen=True)
class LedgerTx:
    """What billing uses of one LedgerTransactionRecorded."""

    transaction_id: str
    account_id: str
    kind: str
    amount: int
    occurred_at: datetime
    source: str = ""                   # CREDIT: the lot source
    reason: str = ""                   # SPEND/HOLD/CAPTURE/RELEASE: the spend reason
    reference: str = ""
    returned_transaction_id: str = ""  # RETURN: the transaction returned
    movements: tuple[Movement, ...] = ()
    balance_after: int = 0             # available + held after the transaction
    sequence: int = 0

    @property
    def purchased_connects(self) -> int:
        return sum(m.amount for m in self.movements if m.purchased)


@dataclass
class RevenueLot:
    """The deferred revenue left in one purchased lot."""

    lot_id: str
    account_id: str
    purchase_id: str
    connects_total: int
    cents_total: int
    connects_remaining: int
    cents_remaining: int
    returned: bool = False  # a RETURN lot (its cents came back from recognised revenue)

    def take(self, connects: int) -> tuple[int, int]:
        """Take `connects` deferred Connects; returns (Connects taken, cents taken).

        A ledger asking for more than the lot holds (a lot billing never saw credited)
        takes what there is: the difference shows up in reconciliation, never as a crash.
        """
        k = min(connects, self.connects_remaining)
        if k <= 0:
            return 0, 0
        cents = self.cents_remaining if k == self.connects_remaining else k * self.cents_remaining // \
            self.connects_remaining
        self.connects_remaining -= k
        self.cents_remaining -= cents
        return k, cents


@dataclass(frozen=True)
class Entry:
    """One journal line: `cents` (and `connects`) of one lot moved by one transaction."""

    transaction_id: str
    position: int        # the movement's index in the transaction (a RETURN's match its original's)
    kind: EntryKind
    account_id: str
    lot_id: str
    purchase_id: str
    connects: int
    cents: int
    occurred_at: datetime
    product: Product | None = None

    @property
    def deferred_delta(self) -> int:
        return DEFERRED_SIGN[self.kind] * self.cents


@dataclass
class Outcome:
    """The journal entries of one transaction and the lots it created or changed."""

    entries: list[Entry] = field(default_factory=list)
    new_lots: list[RevenueLot] = field(default_factory=list)
    changed_lots: list[RevenueLot] = field(default_factory=list)
    cash_cents: int = 0  # CREDIT: the purchase's cash; REVERSE_CREDIT: the cash taken back

    def recognised(self) -> dict[Product, tuple[int, int]]:
        """(Connects, cents) recognised per product by this transaction, net of nothing."""
        out: dict[Product, tuple[int, int]] = {}
        for e in self.entries:
            if e.kind is EntryKind.RECOGNISED and e.product is not None:
                c, v = out.get(e.product, (0, 0))
                out[e.product] = (c + e.connects, v + e.cents)
        return out

    def total(self, kind: EntryKind) -> tuple[int, int]:
        picked = [e for e in self.entries if e.kind is kind]
        return sum(e.connects for e in picked), sum(e.cents for e in picked)

    def summary(self) -> Summary:
        """Recognised per product, breakage and the change of deferred revenue, in one pass."""
        s = Summary()
        for e in self.entries:
            kind = e.kind
            s.deferred_delta += DEFERRED_SIGN[kind] * e.cents
            if kind is _RECOGNISED and e.product is not None:
                c, v = s.recognised.get(e.product, (0, 0))
                s.recognised[e.product] = (c + e.connects, v + e.cents)
            elif kind is _BREAKAGE:
                s.breakage_connects += e.connects
                s.breakage_cents += e.cents
        return s


@dataclass
class Summary:
    recognised: dict[Product, tuple[int, int]] = field(default_factory=dict)
    breakage_connects: int = 0
    breakage_cents: int = 0
    deferred_delta: int = 0


_RECOGNISED, _BREAKAGE = EntryKind.RECOGNISED, EntryKind.BREAKAGE


def lot_ids_needed(tx: LedgerTx) -> list[str]:
    """The existing lots `apply` reads for `tx` (RETURN and CREDIT create theirs)."""
    if tx.kind in (SPEND, CAPTURE, EXPIRE, REVERSE_CREDIT):
        return [m.lot_id for m in tx.movements if m.purchased]
    return []


def apply(tx: LedgerTx, lots: Mapping[str, RevenueLot], *, purchase_cents: Mapping[str, int],
          returned_entries: Iterable[Entry] = ()) -> Outcome:
    """The revenue effect of `tx`. Mutates the lots it takes from (listed in `changed_lots`).

    `purchase_cents` maps purchase ids to their cash (cents) for CREDIT(PURCHASE);
    `returned_entries` are the RECOGNISED entries of the transaction a RETURN gives back.
    """
    out = Outcome()
    if tx.kind == CREDIT:
        _credit(tx, purchase_cents, out)
    elif tx.kind in (SPEND, CAPTURE):
        product = PRODUCT_OF_REASON.get(tx.reason)
        _take(tx, lots, EntryKind.RECOGNISED, out, product)
    elif tx.kind == EXPIRE:
        _take(tx, lots, EntryKind.BREAKAGE, out, None)
    elif tx.kind == RETURN:
        _return(tx, returned_entries, out)
    elif tx.kind == REVERSE_CREDIT:
        _reverse(tx, lots, out)
    return out


def _credit(tx: LedgerTx, purchase_cents: Mapping[str, int], out: Outcome) -> None:
    if tx.source != PURCHASE or not tx.movements:
        return  # free Connects: no revenue
    pid = purchase_id_of(tx.reference) or ""
    cents = purchase_cents.get(pid, 0)  # a credit without a purchase carries no cash (reconcile reports it)
    lot_id = tx.movements[0].lot_id
    lot = RevenueLot(lot_id, tx.account_id, pid, tx.amount, cents, tx.amount, cents)
    out.new_lots.append(lot)
    out.cash_cents = cents
    out.entries.append(Entry(tx.transaction_id, 0, EntryKind.CASH, tx.account_id, lot_id, pid, tx.amount, cents,
                             tx.occurred_at))


def _take(tx: LedgerTx, lots: Mapping[str, RevenueLot], kind: EntryKind, out: Outcome,
          product: Product | None) -> None:
    for position, m in enumerate(tx.movements):
        if not m.purchased:
            continue
        lot = lots.get(m.lot_id)
        if lot is None:
            # Never credited as far as billing knows: the Connects are counted, without cash.
            out.entries.append(Entry(tx.transaction_id, position, kind, tx.account_id, m.lot_id, "", m.amount, 0,
                                     tx.occurred_at, product))
            continue
        _, cents = lot.take(m.amount)
        out.changed_lots.append(lot)
        out.entries.append(Entry(tx.transaction_id, position, kind, tx.account_id, lot.lot_id, lot.purchase_id,
                                 m.amount, cents, tx.occurred_at, product))


def _return(tx: LedgerTx, returned_entries: Iterable[Entry], out: Outcome) -> None:
    """Movement i of a RETURN gives back movement i of the original (the ledger lists both in one order). A
    position whose amount differs (events of a ledger that listed them otherwise) takes an unused entry of the
    same amount instead, so the cash going back to deferred is the cash that was recognised, not 0."""
    original = {e.position: e for e in returned_entries if e.kind is EntryKind.RECOGNISED}
    purchased = [(position, m) for position, m in enumerate(tx.movements) if m.purchased]
    unused = dict(original)
    chosen: dict[int, Entry] = {}
    for position, m in purchased:
        e = unused.get(position)
        if e is not None and e.connects == m.amount:
            chosen[position] = unused.pop(position)
    for position, m in purchased:
        if position not in chosen:
            same = next((k for k, e in unused.items() if e.connects == m.amount), None)
            if same is not None:
                chosen[position] = unused.pop(same)
    for position, m in purchased:
        was = chosen.get(position)
        cents = was.cents if was is not None else 0
        ref = was or original.get(position)
        pid = ref.purchase_id if ref is not None else ""
        product = ref.product if ref is not None else None
        out.new_lots.append(RevenueLot(m.lot_id, tx.account_id, pid, m.amount, cents, m.amount, cents,
                                       returned=True))
        out.entries.append(Entry(tx.transaction_id, position, EntryKind.RETURNED, tx.account_id, m.lot_id, pid,
                                 m.amount, cents, tx.occurred_at, product))


def _reverse(tx: LedgerTx, lots: Mapping[str, RevenueLot], out: Outcome) -> None:
    _take(tx, lots, EntryKind.REVERSED, out, None)
    reversed_by_lot = {e.lot_id: e.cents for e in out.entries if e.kind is EntryKind.REVERSED}
    for position, m in enumerate(tx.movements):
        lot = lots.get(m.lot_id)
        if not m.purchased or lot is None or lot.returned:
            continue
        # The purchase's cash not clawed back from deferred was already recognised or broken: a loss.
        loss = lot.cents_total - reversed_by_lot.get(lot.lot_id, 0)
        out.cash_cents += lot.cents_total
        out.entries.append(Entry(tx.transaction_id, position, EntryKind.LOSS, tx.account_id, lot.lot_id,
                                 lot.purchase_id, lot.connects_total - m.amount, loss, tx.occurred_at))
