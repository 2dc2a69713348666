"""Revenue recognition use case: apply a batch of ledger transactions to the books in one transaction.

The consumer calls `apply_ledger_batch` with the batch's open connection. The
processed-event rows, billing's copy of each transaction, the lots' deferred
revenue, the journal entries and the outbox rows of RevenueRecognised /
BreakageRecognised are written together, so the batch is applied entirely or
not at all, and a replay of it (same event ids, or the same transactions
under new event ids) changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.engine import Connection

from services.billing.adapters.revenue_events import outcome_events
from services.billing.adapters.revenue_repository import BooksRepository
from services.billing.adapters.topics import BILLING_EVENTS as BILLING_TOPIC
from services.billing.domain import revenue
from services.billing.domain.revenue import Entry, EntryKind, LedgerTx, Product, RevenueLot
from services.kit import outbox


@dataclass(frozen=True)
class LedgerItem:
    """One consumed record: where it came from and the transaction it carries."""

    event_id: str
    topic: str
    partition: int
    offset: int
    tx: LedgerTx


@dataclass
class BatchResult:
    """What a batch changed (for metrics, after the commit)."""

    applied: int = 0
    duplicates: int = 0
    recognised: dict[Product, tuple[int, int]] = field(default_factory=dict)
    breakage_cents: int = 0
    deferred_delta: int = 0

    def add_recognised(self, product: Product, connects: int, cents: int) -> None:
        c, v = self.recognised.get(product, (0, 0))
        self.recognised[product] = (c + connects, v + cents)


def apply_ledger_batch(conn: Connection, items: Sequence[LedgerItem], *, group: str | None,
                       events_topic: str = BILLING_TOPIC) -> BatchResult:
    """Apply `items` (in consumption order) inside `conn`'s transaction.

    With `group`, the processed-event rows are written here too (the batch path); without it the
    caller has already recorded the one event (the kit consumer's per-record path).
    """
    repo = BooksRepository(conn)
    result = BatchResult()
    fresh = list(items)
    if group is not None:
        new_ids = repo.mark_processed(group, [{"event_id": i.event_id, "topic": i.topic, "partition": i.partition,
                                               "offset": i.offset} for i in items])
        seen: set[str] = set()
        fresh = []
        for item in items:
            if item.event_id in new_ids and item.event_id not in seen:
                seen.add(item.event_id)
                fresh.append(item)
    candidates: dict[str, LedgerTx] = {}
    for item in fresh:
        candidates.setdefault(item.tx.transaction_id, item.tx)
    if not candidates:
        result.duplicates = len(items)
        return result
    created = {m.lot_id for tx in candidates.values() if tx.kind in (revenue.CREDIT, revenue.RETURN)
               for m in tx.movements}
    pids = [pid for tx in candidates.values() if tx.kind == revenue.CREDIT and tx.source == revenue.PURCHASE
            for pid in [revenue.purchase_id_of(tx.reference)] if pid]
    lots, cash = repo.preload(
        {lot_id for tx in candidates.values() for lot_id in revenue.lot_ids_needed(tx)} - created, pids)
    # The same transaction under another event id (a producer re-send) is applied once: billing's copy of
    # the transaction is the second de-duplication, in the same transaction.
    new = repo.add_transactions([(tx, _cash_of(tx, cash, lots)) for tx in candidates.values()])
    txs = [tx for tx in candidates.values() if tx.transaction_id in new]
    result.duplicates = len(items) - len(txs)
    if not txs:
        return result
    returned = repo.recognitions(tx.returned_transaction_id for tx in txs if tx.kind == revenue.RETURN)

    new_lots: list[tuple[RevenueLot, str, datetime]] = []
    changed: list[RevenueLot] = []
    entries: list[Entry] = []
    events = []
    for tx in txs:
        out = revenue.apply(tx, lots, purchase_cents=cash,
                            returned_entries=returned.get(tx.returned_transaction_id, ()))
        for lot in out.new_lots:
            lots[lot.lot_id] = lot
            new_lots.append((lot, tx.transaction_id, tx.occurred_at))
        changed.extend(out.changed_lots)
        entries.extend(out.entries)
        recognised = [e for e in out.entries if e.kind is _RECOGNISED]
        if recognised:
            returned[tx.transaction_id] = recognised  # a RETURN later in this batch finds it
        summary = out.summary()
        events.extend(outcome_events(tx, summary))
        for product, (connects, cents) in summary.recognised.items():
            result.add_recognised(product, connects, cents)
        result.breakage_cents += summary.breakage_cents
        result.deferred_delta += summary.deferred_delta
    # Lots created in this batch are inserted with their state after the batch; no update needed for them.
    created_now = {lot.lot_id for lot, _, _ in new_lots}
    repo.save(new_lots, [lot for lot in changed if lot.lot_id not in created_now], entries,
              outbox.outbox_rows((events_topic, e) for e in events))
    result.applied = len(txs)
    return result


_RECOGNISED = EntryKind.RECOGNISED


def _cash_of(tx: LedgerTx, cash: dict[str, int], lots: dict[str, RevenueLot]) -> int:
    """The money a transaction's statement line shows: a purchase's price, or what a chargeback took back."""
    if tx.kind == revenue.CREDIT and tx.source == revenue.PURCHASE:
        return cash.get(revenue.purchase_id_of(tx.reference) or "", 0)
    if tx.kind == revenue.REVERSE_CREDIT:
        return sum(lot.cents_total for m in tx.movements if m.purchased
                   for lot in [lots.get(m.lot_id)] if lot is not None and not lot.returned)
    return 0
