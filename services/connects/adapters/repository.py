"""SQLAlchemy Core storage for the ledger: the unit of work (hot path) and the read-side queries.

A batch costs a fixed number of statements whatever its size: one SELECT per
kind of lookup, multi-row INSERTs (insertmanyvalues) and executemany UPDATEs.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from services.connects.adapters import events, topics
from services.connects.adapters.tables import holds, lot_movements, lots, postings, requests, transactions, wallets
from services.connects.domain.model import (
    SYSTEM_ACCOUNTS,
    Hold,
    HoldStatus,
    LedgerTransaction,
    Lot,
    LotMovement,
    LotSource,
    Posting,
    Returnable,
    ReturnReason,
    SpendReason,
    TransactionKind,
    Wallet,
)
from services.connects.service_layer.totals import Issued, LedgerTotals
from services.connects.service_layer.unit_of_work import (
    AbstractLedgerQueries,
    AbstractLedgerUnitOfWork,
    RequestIdConflict,
    StoredRequest,
)
from services.kit import bulk, outbox
from services.kit.db import is_postgres


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _lot(r: sa.Row) -> Lot:
    return Lot(r.lot_id, r.account_id, LotSource(r.source), LotSource(r.origin_source), r.amount, r.remaining,
               r.held, _utc(r.issued_at), _utc(r.expires_at), r.expired)


def _allocations_json(allocs: Sequence[LotMovement]) -> str:
    return json.dumps([[a.lot_id, a.source.value, a.origin_source.value, a.amount, a.expires_at.isoformat()]
                       for a in allocs])


def _hold(r: sa.Row) -> Hold:
    allocs = tuple(LotMovement(lot, LotSource(s), LotSource(o), amt, datetime.fromisoformat(exp))
                   for lot, s, o, amt, exp in json.loads(r.allocations))
    return Hold(r.hold_id, r.account_id, r.amount, SpendReason(r.reason), r.reference, HoldStatus(r.status),
                _utc(r.created_at), _utc(r.expires_at), allocs, r.captured,
                _utc(r.resolved_at) if r.resolved_at else None)


def _tx_row(tx: LedgerTransaction) -> dict[str, object]:
    return {"transaction_id": tx.transaction_id, "account_id": tx.account_id, "sequence": tx.sequence,
            "kind": tx.kind.value, "amount": tx.amount, "source": tx.source and tx.source.value,
            "spend_reason": tx.spend_reason and tx.spend_reason.value,
            "return_reason": tx.return_reason and tx.return_reason.value, "reference": tx.reference,
            "job_id": tx.job_id, "hold_id": tx.hold_id or None,
            "returned_transaction_id": tx.returned_transaction_id or None,
            "available_after": tx.available_after, "held_after": tx.held_after, "occurred_at": tx.occurred_at}


def load_transactions(conn: Connection, where: sa.ColumnElement[bool], order: Sequence[sa.ColumnElement],
                      limit: int | None = None) -> list[LedgerTransaction]:
    query = sa.select(transactions).where(where).order_by(*order)
    if limit is not None:
        query = query.limit(limit)
    rows = conn.execute(query).all()
    if not rows:
        return []
    ids = [r.transaction_id for r in rows]
    legs: dict[str, list[Posting]] = {i: [] for i in ids}
    for p in conn.execute(sa.select(postings).where(postings.c.transaction_id.in_(ids))):
        legs[p.transaction_id].append(Posting(p.ledger_account, p.amount))
    moves: dict[str, list[LotMovement]] = {i: [] for i in ids}
    for m in conn.execute(sa.select(lot_movements).where(lot_movements.c.transaction_id.in_(ids))):
        moves[m.transaction_id].append(LotMovement(m.lot_id, LotSource(m.source), LotSource(m.origin_source),
                                                   m.amount, _utc(m.expires_at)))
    out = []
    for r in rows:
        out.append(LedgerTransaction(
            r.transaction_id, r.account_id, TransactionKind(r.kind), r.amount, _utc(r.occurred_at),
            tuple(legs[r.transaction_id]),
            tuple(sorted(moves[r.transaction_id], key=lambda m: m.listing_order)),
            LotSource(r.source) if r.source else None,
            SpendReason(r.spend_reason) if r.spend_reason else None,
            ReturnReason(r.return_reason) if r.return_reason else None,
            r.reference, r.hold_id or "", r.returned_transaction_id or "", r.available_after, r.held_after,
            r.sequence))
    return out


class SqlAlchemyLedgerUnitOfWork(AbstractLedgerUnitOfWork):
    """One database transaction. Give it an engine (it owns the transaction), or a connection inside
    someone else's transaction (e.g. the idempotent consumer's), whose owner then commits."""

    def __init__(self, engine: Engine | None = None, *, connection: Connection | None = None) -> None:
        if (engine is None) == (connection is None):
            raise ValueError("give an engine or a connection")
        self._owns = connection is None
        self.conn: Connection = connection if connection is not None else engine.connect()  # type: ignore[union-attr]
        if self._owns:
            self.conn.begin()
        self._pg = is_postgres(self.conn)
        self._insert = postgresql.insert if self._pg else sqlite.insert
        self._closed = False
        # PostgreSQL, own transaction: `save` keeps the batch's one write statement here and `commit` sends it
        # with the COMMIT in one round trip.
        self._deferred: tuple[list[bulk.Write], bulk.Write, list[StoredRequest]] | None = None
        self._expected: list[str] = []  # expect_wallets: locked and loaded with find_requests' read
        self._prefetched: tuple[set[str], dict[str, int], list[Any]] | None = None

    def expect_wallets(self, account_ids: Collection[str]) -> None:
        if self._pg:
            self._expected = sorted(account_ids)

    def find_requests(self, request_ids: Iterable[str]) -> dict[str, StoredRequest]:
        ids = list(request_ids)
        if self._pg:  # usually the batch's first statement: its BEGIN travels with it
            expected, self._expected = self._expected, []
            with bulk.pg_pipeline(self.conn) as p:
                cur = p.query(f"SELECT request_id, method, fingerprint, response FROM {requests.name} "
                              "WHERE request_id = ANY(%s)", (ids,))
                if expected:
                    locked, live = self._queue_lock(p, expected)
            if expected:
                self._prefetched = (set(expected), {r.account_id: r.sequence for r in locked}, list(live))
            return {r.request_id: StoredRequest(r.request_id, r.method, r.fingerprint, bytes(r.response))
                    for r in cur}
        rows = self.conn.execute(sa.select(requests.c.request_id, requests.c.method, requests.c.fingerprint,
                                           requests.c.response).where(requests.c.request_id.in_(ids)))
        return {r.request_id: StoredRequest(r.request_id, r.method, r.fingerprint, bytes(r.response)) for r in rows}

    def hold_accounts(self, hold_ids: Iterable[str]) -> dict[str, str]:
        rows = self.conn.execute(sa.select(holds.c.hold_id, holds.c.account_id)
                                 .where(holds.c.hold_id.in_(list(hold_ids))))
        return {r.hold_id: r.account_id for r in rows}

    def transaction_accounts(self, transaction_ids: Iterable[str]) -> dict[str, str]:
        rows = self.conn.execute(sa.select(transactions.c.transaction_id, transactions.c.account_id)
                                 .where(transactions.c.transaction_id.in_(list(transaction_ids))))
        return {r.transaction_id: r.account_id for r in rows}

    def _lock(self, account_ids: list[str]) -> dict[str, int]:
        query = (sa.select(wallets.c.account_id, wallets.c.sequence)
                 .where(wallets.c.account_id.in_(account_ids)).order_by(wallets.c.account_id))
        if self._pg:
            query = query.with_for_update()
        return {r.account_id: r.sequence for r in self.conn.execute(query)}

    def lock_wallets(self, account_ids: Iterable[str], hold_ids: Iterable[str],
                     must_exist: Collection[str] = ()) -> dict[str, Wallet]:
        ids = sorted(account_ids)
        hold_list = list(hold_ids)
        if self._pg:
            # The lock, then the lots and holds it protects, in one round trip (or none: expect_wallets).
            prefetched, self._prefetched = self._prefetched, None
            live: Iterable[Any]
            if prefetched is not None and not hold_list and prefetched[0].issuperset(ids):
                _, found, live = prefetched  # locked with find_requests (expect_wallets)
                held = None
            else:
                with bulk.pg_pipeline(self.conn) as p:
                    locked, live = self._queue_lock(p, ids)
                    held = p.query("SELECT * FROM holds WHERE hold_id = ANY(%s)", (hold_list,)) if hold_list else None
                found = {r.account_id: r.sequence for r in locked}
            if not [a for a in ids if a not in found and a not in must_exist]:
                ids = [a for a in ids if a in found]
                return self._restore(ids, found, live, held or ())
        else:
            found = self._lock(ids)
        missing = [a for a in ids if a not in found and a not in must_exist]
        if missing:
            now = datetime.now(UTC)
            self.conn.execute(self._insert(wallets).on_conflict_do_nothing(),
                              [{"account_id": a, "available": 0, "held": 0, "sequence": 0, "updated_at": now}
                               for a in missing])
            found.update(self._lock(missing))
        ids = [a for a in ids if a in found]  # an account of `must_exist` without a wallet is left out
        live = self.conn.execute(sa.select(lots).where(lots.c.account_id.in_(ids),
                                                       sa.or_(lots.c.remaining > 0, lots.c.held > 0)))
        held = self.conn.execute(sa.select(holds).where(holds.c.hold_id.in_(hold_list))) if hold_list else ()
        return self._restore(ids, found, live, held)

    @staticmethod
    def _queue_lock(p: bulk.Pipeline, ids: list[str]) -> tuple[Any, Any]:
        """Queue the lock of the wallets `ids` (sorted), then (once granted: the server runs them in order, each
        with its own snapshot) the read of the live lots it protects."""
        return (p.query("SELECT account_id, sequence FROM wallets WHERE account_id = ANY(%s) "
                        "ORDER BY account_id FOR UPDATE", (ids,)),
                p.query("SELECT * FROM lots WHERE account_id = ANY(%s) AND (remaining > 0 OR held > 0)", (ids,)))

    @staticmethod
    def _restore(ids: list[str], found: dict[str, int], live: Iterable, held: Iterable) -> dict[str, Wallet]:
        by_account: dict[str, list[Lot]] = {a: [] for a in ids}
        for r in live:
            if r.account_id in by_account:
                by_account[r.account_id].append(_lot(r))
        loaded: dict[str, list[Hold]] = {a: [] for a in ids}
        for r in held:
            if r.account_id in loaded:
                loaded[r.account_id].append(_hold(r))
        return {a: Wallet.restore(a, by_account[a], loaded[a], found[a]) for a in ids}

    def returnables(self, transaction_ids: Iterable[str]) -> dict[str, Returnable]:
        ids = list(transaction_ids)
        txs = load_transactions(self.conn, transactions.c.transaction_id.in_(ids), [transactions.c.transaction_id])
        returned = {r[0] for r in self.conn.execute(
            sa.select(transactions.c.returned_transaction_id)
            .where(transactions.c.returned_transaction_id.in_(ids)))}
        return {t.transaction_id: Returnable(t, t.transaction_id in returned) for t in txs}

    def save(self, wallet_list: Iterable[Wallet], stored: Iterable[StoredRequest], now: datetime) -> None:
        conn = self.conn
        stored = list(stored)
        req_rows = [{"request_id": s.request_id, "method": s.method, "fingerprint": s.fingerprint,
                     "response": s.response, "created_at": now} for s in stored]
        if req_rows and not self._pg:
            # First, so that a duplicate committed meanwhile by another process aborts before any write.
            inserted = conn.execute(self._insert(requests).on_conflict_do_nothing()
                                    .returning(requests.c.request_id), req_rows).scalars().all()
            if len(inserted) != len(stored):
                raise RequestIdConflict({s.request_id for s in stored} - set(inserted))
        tx_rows: list[dict[str, object]] = []
        posting_rows: list[dict[str, object]] = []
        move_rows: list[dict[str, object]] = []
        new_lots: list[dict[str, object]] = []
        lot_updates: list[dict[str, object]] = []
        new_holds, hold_updates, wallet_updates, ledger_events = [], [], [], []
        for w in wallet_list:
            pending = w.take_pending()
            for tx in pending:
                tx_rows.append(_tx_row(tx))
                posting_rows.extend({"transaction_id": tx.transaction_id, "ledger_account": p.ledger_account,
                                     "amount": p.amount} for p in tx.postings)
                move_rows.extend({"transaction_id": tx.transaction_id, "lot_id": m.lot_id, "source": m.source.value,
                                  "origin_source": m.origin_source.value, "amount": m.amount,
                                  "expires_at": m.expires_at} for m in tx.movements)
                ledger_events.append(events.ledger_event(tx))
            for lot_id in w.new_lots:
                lot = w.lots[lot_id]
                new_lots.append({"lot_id": lot.lot_id, "account_id": lot.account_id, "source": lot.source.value,
                                 "origin_source": lot.origin_source.value, "amount": lot.amount,
                                 "remaining": lot.remaining, "held": lot.held, "expired": lot.expired,
                                 "issued_at": lot.issued_at, "expires_at": lot.expires_at})
            for lot_id in w.changed_lots - w.new_lots:
                lot = w.lots[lot_id]
                lot_updates.append({"lot_id": lot_id, "remaining": lot.remaining, "held": lot.held,
                                    "expired": lot.expired})
            for hold_id in w.new_holds:
                h = w.holds[hold_id]
                new_holds.append({"hold_id": h.hold_id, "account_id": h.account_id, "amount": h.amount,
                                  "captured": h.captured, "reason": h.reason.value, "reference": h.reference,
                                  "status": h.status.value, "created_at": h.created_at,
                                  "expires_at": h.expires_at, "resolved_at": h.resolved_at,
                                  "allocations": _allocations_json(h.allocations)})
            for hold_id in w.changed_holds - w.new_holds:
                h = w.holds[hold_id]
                # amount and allocations change when an open hold grows (IncreaseHold)
                hold_updates.append({"hold_id": hold_id, "status": h.status.value, "captured": h.captured,
                                     "resolved_at": h.resolved_at, "amount": h.amount,
                                     "allocations": _allocations_json(h.allocations)})
            wallet_updates.append({"account_id": w.account_id, "available": w.available, "held": w.held,
                                   "sequence": w.sequence, "updated_at": now})
            w.clear_changes()
        if self._pg:
            self._pg_write(stored, req_rows, new_lots, lot_updates, new_holds, hold_updates, tx_rows, posting_rows,
                           move_rows, wallet_updates, ledger_events)
            return
        self._write(new_lots, lot_updates, new_holds, hold_updates, tx_rows, posting_rows, move_rows,
                    wallet_updates)
        if ledger_events:
            outbox.add_many(conn, [(topics.LEDGER, e) for e in ledger_events])

    def _pg_write(self, stored: list[StoredRequest], req_rows: list, new_lots: list, lot_updates: list,
                  new_holds: list, hold_updates: list, tx_rows: list, posting_rows: list,
                  move_rows: list, wallet_updates: list, ledger_events: list) -> None:
        """Every write of the batch as one statement (data-modifying CTEs, `bulk.combined_sql`) in one round trip.
        A request id committed meanwhile by another process makes the batch roll back (RequestIdConflict) before
        its commit."""
        inserts, updates = _table_rows(new_lots, lot_updates, new_holds, hold_updates, tx_rows, posting_rows,
                                       move_rows, wallet_updates)
        writes = [bulk.Write(table, rows) for table, rows in inserts]
        writes += [bulk.Write(table, rows, key) for table, key, rows in updates]
        if ledger_events:
            writes.append(bulk.Write(outbox.OUTBOX, outbox.outbox_rows([(topics.LEDGER, e) for e in ledger_events])))
        if self._owns:
            self._deferred = (writes, bulk.Write(requests, req_rows), stored)
            return
        with bulk.pg_pipeline(self.conn) as p:
            inserted = p.write_all(writes, bulk.Write(requests, req_rows), "request_id", on_conflict_do_nothing=True)
        if inserted is not None:
            got = {r.request_id for r in inserted}
            if len(got) != len(stored):
                raise RequestIdConflict({s.request_id for s in stored} - got)

    def _pg_write_and_commit(self, writes: list[bulk.Write], request_rows: bulk.Write,
                             stored: list[StoredRequest]) -> None:
        """The batch's write statement and COMMIT in one round trip. The requests go in without ON CONFLICT: a
        request id committed meanwhile by another process fails the statement (so nothing commits), and that
        unique violation becomes RequestIdConflict."""
        try:
            with bulk.pg_pipeline(self.conn) as p:
                p.write_all(writes, request_rows)
                p.commit()
        except sa.exc.IntegrityError as exc:
            diag = getattr(exc.orig, "diag", None)
            if getattr(diag, "table_name", None) == requests.name:
                raise RequestIdConflict(s.request_id for s in stored) from exc
            raise

    def _write(self, new_lots: list, lot_updates: list, new_holds: list, hold_updates: list,
               tx_rows: list, posting_rows: list, move_rows: list, wallet_updates: list) -> None:
        """The batch's writes on SQLite (the embedded default): executemany per table.

        Update rows are keyed by column name, each with its key column (`bulk.update_sql`'s form)."""
        inserts, updates = _table_rows(new_lots, lot_updates, new_holds, hold_updates, tx_rows, posting_rows,
                                       move_rows, wallet_updates)
        for table, rows in inserts:
            if rows:
                self.conn.execute(table.insert(), rows)
        for table, key, rows in updates:
            if rows:
                # SQLAlchemy reserves a column's own name for the SET clause: the key travels as "k".
                cols = [c for c in rows[0] if c != key]
                self.conn.execute(table.update().where(table.c[key] == sa.bindparam("k"))
                                  .values({c: sa.bindparam(c) for c in cols}),
                                  [{"k": r[key], **{c: r[c] for c in cols}} for r in rows])

    def commit(self) -> None:
        if self._owns and not self._closed:
            if self._deferred is not None:
                deferred, self._deferred = self._deferred, None
                self._pg_write_and_commit(*deferred)
            self.conn.commit()  # after the pipeline's COMMIT psycopg is idle: this only ends SQLAlchemy's transaction
            self._close()

    def rollback(self) -> None:
        if self._owns and not self._closed:
            self.conn.rollback()
            self._close()

    def _close(self) -> None:
        self._closed = True
        self.conn.close()


class SqlAlchemyLedgerQueries(AbstractLedgerQueries):
    """Read side; `connection` binds it to an open transaction (the jobs consumer), else it uses the engine."""

    def __init__(self, engine: Engine | None = None, *, connection: Connection | None = None) -> None:
        self._engine = engine
        self._conn = connection

    def _run(self, fn):  # type: ignore[no-untyped-def]
        if self._conn is not None:
            return fn(self._conn)
        with self._engine.connect() as conn:  # type: ignore[union-attr]
            return fn(conn)

    def lots(self, account_id: str) -> list[Lot]:
        query = sa.select(lots).where(lots.c.account_id == account_id, sa.or_(lots.c.remaining > 0, lots.c.held > 0))
        return self._run(lambda conn: [_lot(r) for r in conn.execute(query)])

    def transactions(self, account_id: str, before_sequence: int | None, limit: int) -> list[LedgerTransaction]:
        where = transactions.c.account_id == account_id
        if before_sequence is not None:
            where = sa.and_(where, transactions.c.sequence < before_sequence)
        return self._run(lambda conn: load_transactions(conn, where, [transactions.c.sequence.desc()], limit))

    def due_lot_accounts(self, now: datetime, limit: int) -> list[str]:
        query = (sa.select(lots.c.account_id).where(lots.c.remaining > 0, lots.c.expires_at <= now)
                 .group_by(lots.c.account_id).limit(limit))
        return self._run(lambda conn: list(conn.execute(query).scalars()))

    def due_holds(self, now: datetime, limit: int) -> list[str]:
        query = (sa.select(holds.c.hold_id).where(holds.c.status == "OPEN", holds.c.expires_at <= now)
                 .order_by(holds.c.expires_at).limit(limit))
        return self._run(lambda conn: list(conn.execute(query).scalars()))

    def job_transactions(self, job_id: str) -> list[LedgerTransaction]:
        returned = sa.select(transactions.c.returned_transaction_id).where(
            transactions.c.returned_transaction_id.is_not(None))
        where = sa.and_(transactions.c.job_id == job_id,
                        transactions.c.kind.in_([TransactionKind.SPEND.value, TransactionKind.CAPTURE.value]),
                        transactions.c.transaction_id.not_in(returned))
        return self._run(lambda conn: load_transactions(conn, where, [transactions.c.occurred_at]))

    def open_holds(self) -> int:
        query = sa.select(sa.func.count()).select_from(holds).where(holds.c.status == "OPEN")
        return self._run(lambda conn: conn.execute(query).scalar_one())

    def system_balances(self) -> dict[str, int]:
        """Balance of every ledger account kind: each system account, and all wallets together."""
        kind = sa.case((postings.c.ledger_account.like("wallet:%"), "wallets"), else_=postings.c.ledger_account)

        def run(conn: Connection) -> dict[str, int]:
            total = ExactSum(conn, postings.c.amount)
            query = sa.select(kind.label("account"), *total.columns).group_by(kind)
            return {r[0]: total.of(r, 1) for r in conn.execute(query)}

        return self._run(run)

    def ledger_totals(self, start: datetime, end: datetime) -> LedgerTotals:
        t, m = transactions, lot_movements
        in_period = sa.and_(t.c.occurred_at >= start, t.c.occurred_at < end)

        def run(conn: Connection) -> LedgerTotals:
            posted, credited, moved = (ExactSum(conn, postings.c.amount), ExactSum(conn, t.c.amount),
                                       ExactSum(conn, m.c.amount))
            balances = {a: 0 for a in SYSTEM_ACCOUNTS}
            for r in conn.execute(
                    sa.select(postings.c.ledger_account, *posted.columns)
                    .select_from(postings.join(t, t.c.transaction_id == postings.c.transaction_id))
                    .where(postings.c.ledger_account.in_(SYSTEM_ACCOUNTS), t.c.occurred_at < end)
                    .group_by(postings.c.ledger_account)):
                balances[r[0]] = posted.of(r, 1)
            issued = {LotSource(r[0]): Issued(credited.of(r, 2), r[1]) for r in conn.execute(
                sa.select(t.c.source, sa.func.count(), *credited.columns)
                .where(in_period, t.c.kind == TransactionKind.CREDIT.value).group_by(t.c.source))}
            totals = LedgerTotals(start, end, balances, issued)
            kinds = [k.value for k in (TransactionKind.SPEND, TransactionKind.CAPTURE, TransactionKind.EXPIRE,
                                       TransactionKind.RETURN, TransactionKind.REVERSAL)]
            for r in conn.execute(
                    sa.select(t.c.kind, t.c.spend_reason, m.c.origin_source, *moved.columns)
                    .select_from(m.join(t, t.c.transaction_id == m.c.transaction_id))
                    .where(in_period, t.c.kind.in_(kinds)).group_by(t.c.kind, t.c.spend_reason, m.c.origin_source)):
                totals.add_moved(TransactionKind(r[0]), SpendReason(r[1]) if r[1] else None, LotSource(r[2]),
                                 moved.of(r, 3))
            return totals

        return self._run(run)


class ExactSum:
    """SUM of an integer column, exact whatever the total: PostgreSQL's SUM(bigint) is numeric; SQLite's SUM
    raises past 2^63-1 (and TOTAL is a float), so there the high and low 32 bits are summed apart and joined in
    Python (>> is arithmetic, so negative amounts split correctly too)."""

    def __init__(self, conn: Connection, column: sa.ColumnElement[int]) -> None:
        self._pg = is_postgres(conn)
        self.columns: list[sa.ColumnElement[Any]] = (
            [sa.func.sum(column)] if self._pg
            else [sa.func.sum(column.op(">>")(32)), sa.func.sum(column.op("&")(0xFFFFFFFF))])

    def of(self, row: Sequence[Any], at: int) -> int:
        """The sum in `row`, whose `columns` start at index `at`."""
        if self._pg:
            return int(row[at])
        return int(row[at]) * 2**32 + int(row[at + 1])


def _table_rows(new_lots: list, lot_updates: list, new_holds: list, hold_updates: list,
                tx_rows: list, posting_rows: list, move_rows: list, wallet_updates: list,
                ) -> tuple[list, list]:
    """A batch's rows by table, in write order: inserts (table, rows), then updates (table, key, rows)."""
    return ([(lots, new_lots), (holds, new_holds), (transactions, tx_rows), (postings, posting_rows),
             (lot_movements, move_rows)],
            [(lots, "lot_id", lot_updates), (holds, "hold_id", hold_updates), (wallets, "account_id", wallet_updates)])
