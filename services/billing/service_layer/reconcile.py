"""Reconcile: gather billing's, the ledger's and the provider's sides, classify, record, publish.

A run compares everything up to a cut-off (`now - settle`), so purchases,
credits and ledger events still in flight (the consumer's lag) are not
reported as differences. Runs are serialised (one at a time per database);
a Reconcile retried with the same request_id returns the stored run.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from adsmon.billing.v1 import billing_pb2
from adsmon.billing.v1 import events_pb2 as billing_events
from adsmon.connects.v1 import connects_pb2
from sqlalchemy.engine import Engine

from services.billing.adapters import revenue_metrics as metrics
from services.billing.adapters.revenue_events import PRODUCER, money
from services.billing.adapters.revenue_repository import BooksRepository
from services.billing.adapters.revenue_tables import reconcile_mismatches, reconcile_runs
from services.billing.adapters.topics import BILLING_EVENTS as BILLING_TOPIC
from services.billing.domain import reconcile as rec
from services.billing.domain.revenue import EntryKind
from services.billing.service_layer.ports import PurchaseLookup, PurchaseRecord
from services.billing.service_layer.revenue_ports import PaymentRecords
from services.connects.client import AbstractConnectsClient
from services.kit import outbox
from services.kit.db import is_postgres
from services.kit.errors import Aborted
from services.kit.kafka import make_event

BEGINNING = datetime(2000, 1, 1, tzinfo=UTC)
_LOCK_KEY = 0x62696C6C7265636E  # "billrecn": one reconciliation at a time per database
_local_lock = threading.Lock()


class ReconciliationInProgress(Aborted):
    def __init__(self) -> None:
        super().__init__("RECONCILIATION_IN_PROGRESS", "another reconciliation run is active; retry later")


@dataclass
class Reconciler:
    """Everything a run needs; `run` is the use case."""

    engine: Engine
    connects: AbstractConnectsClient
    purchases: PurchaseLookup
    provider: PaymentRecords
    clock: Callable[[], datetime]
    settle: timedelta = timedelta(seconds=0)
    events_topic: str = BILLING_TOPIC

    def run(self, request_id: str | None = None) -> billing_pb2.ReconcileResponse:
        if request_id:
            stored = self._stored(request_id)
            if stored is not None:
                return stored
        started = time.perf_counter()
        with self._exclusive():
            if request_id:  # a concurrent retry may have finished while we waited for the lock
                stored = self._stored(request_id)
                if stored is not None:
                    return stored
            try:
                response, mismatches = self._compare()
                self._record(request_id, response, mismatches)
            except Exception:
                metrics.reconciliation_runs.labels("error").inc()
                raise
        self._export(mismatches, time.perf_counter() - started)
        return response

    # -- the comparison ----------------------------------------------------------------------

    def _compare(self) -> tuple[billing_pb2.ReconcileResponse, list[rec.Mismatch]]:
        now = self.clock()
        cut = now - self.settle
        purchases = [p for p in self.purchases.credited() if p.finished_at is None or p.finished_at < cut]
        with self.engine.connect() as conn:
            repo = BooksRepository(conn)
            lots = repo.purchase_lots(cut)
            clawed = repo.entry_sums_by_purchase(EntryKind.REVERSED, cut)
            billing_unspent = repo.deferred(cut)[0]
        payments = self.provider.captured_payments(BEGINNING, cut)
        reversals = self.provider.reversals(BEGINNING, cut)
        purchases += self._uncredited(purchases, [p.purchase_id for p in payments], cut)
        totals = self.connects.ledger_totals(BEGINNING, cut)
        mismatches = rec.compare_purchases(
            [rec.Purchase(p.purchase_id, p.account_id, p.connects, p.amount_cents, p.state) for p in purchases],
            [rec.Credit(lot.purchase_id, lot.account_id, lot.connects, lot.connects_remaining) for lot in lots],
            [rec.Payment(p.purchase_id, p.amount_cents) for p in payments],
            [rec.Reversal(r.purchase_id, r.amount_cents) for r in reversals], clawed)
        ledger = ledger_side(totals)
        mismatches += rec.compare_totals(sum(lot.connects for lot in lots), billing_unspent, ledger)
        credited = [p for p in purchases if p.state in rec.CREDITED]
        accounts = {p.account_id for p in purchases} | {lot.account_id for lot in lots}
        response = billing_pb2.ReconcileResponse(
            run_id=str(uuid.uuid4()), accounts_checked=len(accounts),
            mismatches=[mismatch_pb(m) for m in mismatches],
            billing_purchased_connects=sum(p.connects for p in credited),
            ledger_purchased_connects=ledger.purchased,
            billing_cash=money(sum(p.amount_cents for p in credited)),
            provider_cash=money(sum(p.amount_cents for p in payments) - sum(r.amount_cents for r in reversals)))
        response.checked_at.FromDatetime(now)
        return response, mismatches

    def _uncredited(self, credited: list[PurchaseRecord], paid_ids: list[str], cut: datetime) -> list[PurchaseRecord]:
        """Billing's record of purchases the provider was paid for but billing never credited (if any). One
        credited after the cut was in flight at the cut (paid just before it, credited just after): PENDING
        as of the cut, so not a difference this run (the next run compares it)."""
        known = {p.purchase_id for p in credited}
        found = (self.purchases.by_id(pid) for pid in sorted(set(paid_ids) - known))
        return [replace(p, state=rec.PENDING) if p.state in rec.CREDITED and p.finished_at and p.finished_at >= cut
                else p for p in found if p is not None]

    # -- storage, events, metrics ------------------------------------------------------------

    def _stored(self, request_id: str) -> billing_pb2.ReconcileResponse | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(reconcile_runs.c.response).where(
                reconcile_runs.c.request_id == request_id)).first()
        return billing_pb2.ReconcileResponse.FromString(row[0]) if row else None

    def _record(self, request_id: str | None, response: billing_pb2.ReconcileResponse,
                mismatches: list[rec.Mismatch]) -> None:
        run_id = response.run_id
        with self.engine.begin() as conn:
            conn.execute(reconcile_runs.insert().values(
                run_id=run_id, request_id=request_id or None, checked_at=response.checked_at.ToDatetime(tzinfo=UTC),
                accounts_checked=response.accounts_checked, mismatch_count=len(mismatches),
                response=response.SerializeToString()))
            if mismatches:
                conn.execute(reconcile_mismatches.insert(), [
                    {"run_id": run_id, "kind": m.kind.value, "account_id": m.account_id, "purchase_id": m.purchase_id,
                     "billing_connects": m.billing_connects, "ledger_connects": m.ledger_connects,
                     "billing_cents": m.billing_cents or 0, "provider_cents": m.provider_cents or 0}
                    for m in mismatches])
            events = [make_event(billing_events.ReconciliationMismatchFound(run_id=run_id, mismatch=pb),
                                 pb.account_id or run_id, PRODUCER) for pb in response.mismatches]
            events.append(make_event(billing_events.ReconciliationCompleted(
                run_id=run_id, accounts_checked=response.accounts_checked, mismatch_count=len(mismatches)),
                run_id, PRODUCER))
            outbox.add_many(conn, [(self.events_topic, e) for e in events])

    def _export(self, mismatches: list[rec.Mismatch], seconds: float) -> None:
        counts = {k: 0 for k in rec.MismatchKind}
        for m in mismatches:
            counts[m.kind] += 1
        for kind, n in counts.items():
            metrics.reconciliation_mismatches.labels(kind.value).set(n)
            if n:
                metrics.reconciliation_mismatches_total.labels(kind.value).inc(n)
        metrics.reconciliation_runs.labels("mismatch" if mismatches else "clean").inc()
        metrics.reconciliation_seconds.set(seconds)
        metrics.reconciliation_last_run.set(time.time())

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        if not _local_lock.acquire(blocking=False):
            raise ReconciliationInProgress()
        try:
            if not is_postgres(self.engine):
                yield
                return
            with self.engine.connect() as lock_conn:
                got = lock_conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": _LOCK_KEY}).scalar()
                lock_conn.commit()
                if not got:
                    raise ReconciliationInProgress()
                try:
                    yield
                finally:
                    lock_conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": _LOCK_KEY})
                    lock_conn.commit()
        finally:
            _local_lock.release()


def ledger_side(totals: connects_pb2.GetLedgerTotalsResponse) -> rec.LedgerSide:
    """Purchased Connects issued, and still unspent, according to the ledger's totals."""
    purchase = connects_pb2.LOT_SOURCE_PURCHASE
    issued = sum(t.connects for t in totals.issued if t.source == purchase)
    spent = sum(t.connects for t in totals.spent if t.origin_source == purchase)
    expired = sum(t.connects for t in totals.expired if t.origin_source == purchase)
    returned = sum(t.connects for t in totals.returned if t.origin_source == purchase)
    clawed = sum(t.connects for t in totals.reversed if t.origin_source == purchase)  # chargeback claw-backs
    return rec.LedgerSide(purchased=issued, unspent=issued - spent - expired + returned - clawed)


_KIND_PB = {k: f"MISMATCH_KIND_{k.value}" for k in rec.MismatchKind}  # protobuf takes enum values by name


def mismatch_pb(m: rec.Mismatch) -> billing_pb2.ReconciliationMismatch:
    pb = billing_pb2.ReconciliationMismatch(kind=_KIND_PB[m.kind], account_id=m.account_id,
                                            purchase_id=m.purchase_id, billing_connects=m.billing_connects,
                                            ledger_connects=m.ledger_connects)
    if m.billing_cents is not None:
        pb.billing_amount.CopyFrom(money(m.billing_cents))
    if m.provider_cents is not None:
        pb.provider_amount.CopyFrom(money(m.provider_cents))
    return pb
