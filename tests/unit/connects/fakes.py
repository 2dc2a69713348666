"""In-memory ledger storage with the same contract as the SQLAlchemy adapter."""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterable
from datetime import datetime

from services.connects.domain.model import (
    SYSTEM_ACCOUNTS,
    HoldStatus,
    LedgerTransaction,
    Lot,
    Returnable,
    TransactionKind,
    Wallet,
    job_of,
)
from services.connects.service_layer.totals import Issued, LedgerTotals
from services.connects.service_layer.unit_of_work import (
    AbstractLedgerQueries,
    AbstractLedgerUnitOfWork,
    RequestIdConflict,
    StoredRequest,
)


class FakeLedgerStore(AbstractLedgerQueries):
    """Committed state; one lock stands in for row locks (one writer at a time)."""

    def __init__(self) -> None:
        self.wallets: dict[str, Wallet] = {}
        self.transactions_by_id: dict[str, LedgerTransaction] = {}
        self.requests: dict[str, StoredRequest] = {}
        self.returned: set[str] = set()
        self.outbox: list[LedgerTransaction] = []
        self.lock = threading.RLock()

    def lots(self, account_id: str) -> list[Lot]:
        w = self.wallets.get(account_id)
        return [copy.copy(lot) for lot in w.lots.values()] if w else []

    def transactions(self, account_id, before_sequence, limit):
        txs = sorted((t for t in self.transactions_by_id.values() if t.account_id == account_id
                      and (before_sequence is None or t.sequence < before_sequence)),
                     key=lambda t: -t.sequence)
        return txs[:limit]

    def due_lot_accounts(self, now, limit):
        return [a for a, w in self.wallets.items()
                if any(lot.remaining and lot.is_due(now) for lot in w.lots.values())][:limit]

    def due_holds(self, now, limit):
        return [h.hold_id for w in self.wallets.values() for h in w.holds.values()
                if h.status is HoldStatus.OPEN and h.expires_at <= now][:limit]

    def job_transactions(self, job_id):
        return [t for t in self.transactions_by_id.values()
                if t.kind in (TransactionKind.SPEND, TransactionKind.CAPTURE) and job_of(t.reference) == job_id
                and t.transaction_id not in self.returned]

    def open_holds(self):
        return sum(h.status is HoldStatus.OPEN for w in self.wallets.values() for h in w.holds.values())

    def ledger_totals(self, start, end):
        balances = dict.fromkeys(SYSTEM_ACCOUNTS, 0)
        totals = LedgerTotals(start, end, balances)
        for tx in self.transactions_by_id.values():
            if tx.occurred_at < end:
                for p in tx.postings:
                    if p.ledger_account in balances:
                        balances[p.ledger_account] += p.amount
            if not start <= tx.occurred_at < end:
                continue
            if tx.kind is TransactionKind.CREDIT:
                before = totals.issued.get(tx.source, Issued(0, 0))
                totals.issued[tx.source] = Issued(before.connects + tx.amount, before.transactions + 1)
            for m in tx.movements:
                totals.add_moved(tx.kind, tx.spend_reason, m.origin_source, m.amount)
        return totals

    def uow(self) -> FakeUnitOfWork:
        return FakeUnitOfWork(self)


class FakeUnitOfWork(AbstractLedgerUnitOfWork):
    def __init__(self, store: FakeLedgerStore) -> None:
        self.store = store
        self.locked = False
        self.committed = False
        self.fail_on_save: Exception | None = None

    def find_requests(self, request_ids: Iterable[str]) -> dict[str, StoredRequest]:
        return {r: self.store.requests[r] for r in request_ids if r in self.store.requests}

    def hold_accounts(self, hold_ids):
        ids = set(hold_ids)
        return {h: a for a, w in self.store.wallets.items() for h in w.holds if h in ids}

    def transaction_accounts(self, transaction_ids):
        return {t: self.store.transactions_by_id[t].account_id for t in transaction_ids
                if t in self.store.transactions_by_id}

    def lock_wallets(self, account_ids, hold_ids, must_exist=()):
        self.store.lock.acquire()
        self.locked = True
        out = {}
        for a in account_ids:
            if a in must_exist and a not in self.store.wallets:
                continue
            w = self.store.wallets.get(a) or Wallet(a)
            out[a] = copy.deepcopy(w)
            out[a].clear_changes()
        return out

    def returnables(self, transaction_ids):
        return {t: Returnable(self.store.transactions_by_id[t], t in self.store.returned)
                for t in transaction_ids if t in self.store.transactions_by_id}

    def save(self, wallets: Iterable[Wallet], requests: Iterable[StoredRequest], now: datetime) -> None:
        if self.fail_on_save:
            raise self.fail_on_save
        requests = list(requests)
        if clash := [r.request_id for r in requests if r.request_id in self.store.requests]:
            raise RequestIdConflict(clash)
        for w in wallets:
            for tx in w.take_pending():
                self.store.transactions_by_id[tx.transaction_id] = tx
                self.store.outbox.append(tx)
                if tx.returned_transaction_id:
                    self.store.returned.add(tx.returned_transaction_id)
            w.clear_changes()
            self.store.wallets[w.account_id] = w
        for r in requests:
            self.store.requests[r.request_id] = r

    def commit(self) -> None:
        self.committed = True
        self._unlock()

    def rollback(self) -> None:
        self._unlock()

    def _unlock(self) -> None:
        if self.locked:
            self.locked = False
            self.store.lock.release()
