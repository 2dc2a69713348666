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
from services.billing.domain import revenue
from services.billing.domain.revenue import Entry, EntryKind, LedgerTx, Product, RevenueLot
from services.kit import outbox
from services.kit.kafka import BILLING_TOPIC


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
    # The same transaction under another event id (a producer re-send) is applied once too.
    known = repo.known_transactions([i.tx.transaction_id for i in fresh])
    txs: list[LedgerTx] = []
    for item in fresh:
        if item.tx.transaction_id not in known:
            known.add(item.tx.transaction_id)
            txs.append(item.tx)
    result.duplicates = len(items) - len(txs)
    if not txs:
        return result
    created = {m.lot_id for tx in txs if tx.kind in (revenue.CREDIT, revenue.RETURN) for m in tx.movements}
    lots = repo.lots({lot_id for tx in txs for lot_id in revenue.lot_ids_needed(tx)} - created)
    returned = repo.recognitions(tx.returned_transaction_id for tx in txs if tx.kind == revenue.RETURN)
    pids = [pid for tx in txs if tx.kind == revenue.CREDIT and tx.source == revenue.PURCHASE
            for pid in [revenue.purchase_id_of(tx.reference)] if pid]
    cash = repo.purchase_cash(pids)

    new_lots: list[tuple[RevenueLot, str, datetime]] = []
    changed: list[RevenueLot] = []
    entries: list[Entry] = []
    tx_rows: list[tuple[LedgerTx, int]] = []
    events = []
    for tx in txs:
        out = revenue.apply(tx, lots, purchase_cents=cash,
                            returned_entries=returned.get(tx.returned_transaction_id, ()))
        for lot in out.new_lots:
            lots[lot.lot_id] = lot
            new_lots.append((lot, tx.transaction_id, tx.occurred_at))
        changed.extend(out.changed_lots)
        entries.extend(out.entries)
        recognised = [e for e in out.entries if e.kind is EntryKind.RECOGNISED]
        if recognised:
            returned[tx.transaction_id] = recognised  # a RETURN later in this batch finds it
        tx_rows.append((tx, out.cash_cents))
        events.extend(outcome_events(tx, out))
        for product, (connects, cents) in out.recognised().items():
            result.add_recognised(product, connects, cents)
        result.breakage_cents += out.total(EntryKind.BREAKAGE)[1]
        result.deferred_delta += sum(e.deferred_delta for e in out.entries)
    # Lots created in this batch are inserted with their state after the batch; no update needed for them.
    created_now = {lot.lot_id for lot, _, _ in new_lots}
    repo.add_transactions(tx_rows)
    repo.save(new_lots, [lot for lot in changed if lot.lot_id not in created_now], entries)
    outbox.add_many(conn, [(events_topic, e) for e in events])
    result.applied = len(txs)
    return result
