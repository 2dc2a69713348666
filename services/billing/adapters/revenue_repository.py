"""The books' SQL: batch writes of the revenue consumer, and the reads of reports and reconciliation.

Writes go as one statement per table per batch (kit.bulk on PostgreSQL,
executemany on SQLite), so a batch of a thousand ledger events costs a handful
of round trips.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from services.billing.adapters.revenue_tables import (
    revenue_entries,
    revenue_lots,
    revenue_transactions,
)
from services.billing.adapters.tables import purchases
from services.billing.domain.revenue import Entry, EntryKind, LedgerTx, Product, RevenueLot
from services.kit import bulk
from services.kit.consumer import PROCESSED
from services.kit.db import is_postgres
from services.kit.outbox import OUTBOX

_CHUNK = 5000


def utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


class BooksRepository:
    """Rows of the books over one open transaction."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.pg = is_postgres(conn)
        self._iso: dict[datetime, str] = {}

    def _t(self, value: datetime) -> datetime | str:
        """A timestamp for a bulk row: on PostgreSQL its ISO text, rendered once per distinct time (the
        rows of one ledger transaction share it), which the JSON row encoder then copies as is."""
        if not self.pg:
            return value
        text = self._iso.get(value)
        if text is None:
            text = self._iso[value] = value.isoformat()
        return text

    def _among(self, column: sa.ColumnElement[str], values: Iterable[str]) -> list[sa.ColumnElement[bool]]:
        """`column` is one of `values`: one array parameter on PostgreSQL (`= ANY`), IN-lists elsewhere."""
        ids = sorted(set(values))
        if not ids:
            return []
        if self.pg:
            return [column == sa.any_(sa.bindparam("ids", ids, type_=postgresql.ARRAY(sa.String)))]
        return [column.in_(chunk) for chunk in _chunks(ids)]

    # -- writing ---------------------------------------------------------------------------

    def _insert_returning(self, table: sa.Table, rows: list[dict[str, Any]], key: str) -> set[Any]:
        """Insert rows, skipping those whose key exists; returns the keys inserted."""
        if not rows:
            return set()
        if self.pg:
            return set(bulk.pg_insert_rows(self.conn, table, rows, returning=key, on_conflict_do_nothing=True))
        inserted = set()
        for row in rows:
            got = self.conn.execute(sqlite.insert(table).values(**row).on_conflict_do_nothing()
                                    .returning(table.c[key])).first()
            if got is not None:
                inserted.add(got[0])
        return inserted

    def mark_processed(self, group: str, rows: list[dict[str, Any]]) -> set[str]:
        """processed_events rows of the batch (keys as the kit's table); returns the event ids that are new."""
        now = self._t(datetime.now(UTC))
        return self._insert_returning(PROCESSED, [{**r, "consumer_group": group, "processed_at": now}
                                                  for r in rows], "event_id")

    def add_transactions(self, txs: list[tuple[LedgerTx, int]]) -> set[str]:
        """Billing's copy of each transaction (with its cash); returns the ids it did not hold yet (the primary
        key skips the others: the same transaction re-sent under another event id)."""
        rows = [{"transaction_id": tx.transaction_id, "account_id": tx.account_id, "sequence": tx.sequence,
                 "kind": tx.kind, "source_or_reason": tx.source or tx.reason, "amount": tx.amount,
                 "purchased_connects": tx.purchased_connects, "cents": cents, "reference": tx.reference[:256],
                 "balance_after": tx.balance_after, "occurred_at": self._t(tx.occurred_at)} for tx, cents in txs]
        return self._insert_returning(revenue_transactions, rows, "transaction_id")

    def preload(self, lot_ids: Iterable[str], purchase_ids: Iterable[str]) -> tuple[dict[str, RevenueLot],
                                                                                  dict[str, int]]:
        """`lots(lot_ids)` and `purchase_cash(purchase_ids)`, in one round trip on PostgreSQL."""
        if not self.pg:
            return self.lots(lot_ids), self.purchase_cash(purchase_ids)
        lot_list, pid_list = sorted(set(lot_ids)), sorted(set(purchase_ids))
        with bulk.pg_pipeline(self.conn) as pipe:
            lot_rows = pipe.query("SELECT lot_id, account_id, purchase_id, connects_total, cents_total, "
                                  "connects_remaining, cents_remaining, returned FROM revenue_lots "
                                  "WHERE lot_id = ANY(%s)", (lot_list,)) if lot_list else None
            cash_rows = pipe.query("SELECT purchase_id, amount_cents FROM purchases WHERE purchase_id = ANY(%s)",
                                   (pid_list,)) if pid_list else None
        lots = {r.lot_id: _lot(r) for r in (lot_rows.fetchall() if lot_rows else ())}
        cash = {r.purchase_id: int(r.amount_cents) for r in (cash_rows.fetchall() if cash_rows else ())}
        return lots, cash

    def purchase_cash(self, purchase_ids: Iterable[str]) -> dict[str, int]:
        """Cash (cents) of these purchases, from the money-in half's table (set-based, same transaction)."""
        c = purchases.c
        cash: dict[str, int] = {}
        for where in self._among(c.purchase_id, purchase_ids):
            cash.update((pid, int(v)) for pid, v in self.conn.execute(
                sa.select(c.purchase_id, c.amount_cents).where(where)))
        return cash

    def lots(self, lot_ids: Iterable[str]) -> dict[str, RevenueLot]:
        found: dict[str, RevenueLot] = {}
        c = revenue_lots.c
        for where in self._among(c.lot_id, lot_ids):
            for r in self.conn.execute(sa.select(revenue_lots).where(where)):
                found[r.lot_id] = _lot(r)
        return found

    def recognitions(self, transaction_ids: Iterable[str]) -> dict[str, list[Entry]]:
        """The RECOGNISED entries of these transactions (what a RETURN of them gives back)."""
        out: dict[str, list[Entry]] = {}
        c = revenue_entries.c
        for where in self._among(c.transaction_id, transaction_ids):
            q = sa.select(revenue_entries).where(where, c.kind == EntryKind.RECOGNISED.value)
            for r in self.conn.execute(q):
                out.setdefault(r.transaction_id, []).append(_entry(r))
        return out

    def save(self, new_lots: list[tuple[RevenueLot, str, datetime]], changed_lots: Iterable[RevenueLot],
             entries: list[Entry], outbox_rows: list[dict[str, Any]]) -> None:
        """The batch's writes: new lots, lots taken from, journal entries, outbox rows (one round trip on
        PostgreSQL: psycopg pipeline mode)."""
        lot_rows = [
            {"lot_id": lot.lot_id, "account_id": lot.account_id, "purchase_id": lot.purchase_id,
             "connects_total": lot.connects_total, "cents_total": lot.cents_total,
             "connects_remaining": lot.connects_remaining, "cents_remaining": lot.cents_remaining,
             "returned": lot.returned, "transaction_id": tx_id, "created_at": self._t(at)}
            for lot, tx_id, at in new_lots]
        changed = [{"lot_id": lot.lot_id, "connects_remaining": lot.connects_remaining,
                    "cents_remaining": lot.cents_remaining} for lot in {id(x): x for x in changed_lots}.values()]
        entry_rows = [
            {"transaction_id": e.transaction_id, "position": e.position, "kind": e.kind.value,
             "account_id": e.account_id, "lot_id": e.lot_id, "purchase_id": e.purchase_id,
             "product": e.product.value if e.product else None, "connects": e.connects, "cents": e.cents,
             "deferred_delta": e.deferred_delta, "occurred_at": self._t(e.occurred_at)} for e in entries]
        if self.pg:
            with bulk.pg_pipeline(self.conn) as pipe:
                pipe.insert_rows(revenue_lots, lot_rows)
                pipe.update_rows(revenue_lots, "lot_id", changed)
                pipe.insert_rows(revenue_entries, entry_rows)
                pipe.insert_rows(OUTBOX, outbox_rows)
            return
        for table, rows in ((revenue_lots, lot_rows), (revenue_entries, entry_rows), (OUTBOX, outbox_rows)):
            if rows:
                self.conn.execute(table.insert(), rows)
        if changed:
            c = revenue_lots.c
            self.conn.execute(revenue_lots.update().where(c.lot_id == sa.bindparam("k")).values(
                connects_remaining=sa.bindparam("cr"), cents_remaining=sa.bindparam("vr")),
                [{"k": x["lot_id"], "cr": x["connects_remaining"], "vr": x["cents_remaining"]} for x in changed])

    # -- reading ---------------------------------------------------------------------------

    def totals_by_kind(self, start: datetime | None, end: datetime) -> list[KindTotal]:
        """Journal sums per (kind, product) over [start, end) (from the beginning if start is None)."""
        c = revenue_entries.c
        q = sa.select(c.kind, c.product, sa.func.sum(c.connects), sa.func.sum(c.cents)).where(c.occurred_at < end)
        if start is not None:
            q = q.where(c.occurred_at >= start)
        q = q.group_by(c.kind, c.product)
        return [KindTotal(EntryKind(k), Product(p) if p else None, int(n or 0), int(v or 0))
                for k, p, n, v in self.conn.execute(q)]

    def deferred(self, end: datetime | None = None) -> tuple[int, int]:
        """(Connects, cents) deferred: per lot now, or from the journal as of `end`."""
        if end is None:
            c = revenue_lots.c
            n, v = self.conn.execute(sa.select(sa.func.sum(c.connects_remaining), sa.func.sum(c.cents_remaining))
                                     ).one()
            return int(n or 0), int(v or 0)
        e = revenue_entries.c
        sign = sa.case((e.kind.in_([EntryKind.CASH.value, EntryKind.RETURNED.value]), 1),
                       (e.kind == EntryKind.LOSS.value, 0), else_=-1)
        n, v = self.conn.execute(sa.select(sa.func.sum(sign * e.connects), sa.func.sum(e.deferred_delta))
                                 .where(e.occurred_at < end)).one()
        return int(n or 0), int(v or 0)

    def account_transactions(self, account_id: str, start: datetime, end: datetime) -> list[Any]:
        c = revenue_transactions.c
        return list(self.conn.execute(sa.select(revenue_transactions).where(
            c.account_id == account_id, c.occurred_at >= start, c.occurred_at < end).order_by(c.occurred_at,
                                                                                              c.sequence)))

    def balance_before(self, account_id: str, when: datetime) -> int:
        c = revenue_transactions.c
        row = self.conn.execute(sa.select(c.balance_after).where(c.account_id == account_id, c.occurred_at < when)
                                .order_by(c.occurred_at.desc(), c.sequence.desc()).limit(1)).first()
        return int(row[0]) if row else 0

    def purchase_lots(self, end: datetime) -> list[CreditedLot]:
        """Every PURCHASE credit billing consumed before `end`, with what is left deferred in its lot."""
        c = revenue_lots.c
        q = sa.select(c.purchase_id, c.account_id, c.connects_total, c.cents_total, c.connects_remaining,
                      c.transaction_id).where(c.returned.is_(False), c.created_at < end)
        return [CreditedLot(*r) for r in self.conn.execute(q)]

    def entry_sums_by_purchase(self, kind: EntryKind, end: datetime) -> dict[str, int]:
        """Connects per purchase of one entry kind (e.g. REVERSED: clawed back) before `end`."""
        c = revenue_entries.c
        q = sa.select(c.purchase_id, sa.func.sum(c.connects)).where(c.kind == kind.value, c.occurred_at < end) \
            .group_by(c.purchase_id)
        return {pid: int(n) for pid, n in self.conn.execute(q)}


@dataclass(frozen=True)
class KindTotal:
    kind: EntryKind
    product: Product | None
    connects: int
    cents: int


@dataclass(frozen=True)
class CreditedLot:
    purchase_id: str
    account_id: str
    connects: int
    cents: int
    connects_remaining: int
    transaction_id: str


def _entry(r: Any) -> Entry:
    return Entry(r.transaction_id, r.position, EntryKind(r.kind), r.account_id, r.lot_id, r.purchase_id,
                 r.connects, r.cents, utc(r.occurred_at), Product(r.product) if r.product else None)


def _lot(r: Any) -> RevenueLot:
    return RevenueLot(r.lot_id, r.account_id, r.purchase_id, int(r.connects_total), int(r.cents_total),
                      int(r.connects_remaining), int(r.cents_remaining), bool(r.returned))
