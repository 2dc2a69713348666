"""Reconciliation finds each class of difference (billing, ledger, provider), and none on clean books."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
import sqlalchemy as sa
from adsmon.billing.v1 import billing_pb2
from adsmon.connects.v1 import connects_pb2 as pb
from prometheus_client import REGISTRY

from services.billing.adapters.lookup import SqlAlchemyPurchaseLookup
from services.billing.adapters.revenue_tables import reconcile_mismatches
from services.billing.domain import reconcile as rec
from services.billing.entrypoints.reconcile_worker import ReconcileWorker
from services.billing.entrypoints.revenue_consumer import RevenueConsumer
from services.billing.service_layer.reconcile import Reconciler, ReconciliationInProgress
from services.kit.db import make_engine
from services.kit.errors import Unavailable
from services.kit.outbox import OUTBOX
from tests.unit.billing.revenue_fakes import (
    CapturingDlq,
    FakeLedgerTotals,
    FakeProvider,
    Ledger,
    count,
    insert_purchase,
    later,
    migrate_books,
    records,
)

PURCHASE = pb.LOT_SOURCE_PURCHASE


class World:
    """Billing's books, the ledger's totals and the provider's records, kept in step by `buy` and `spend`."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.ledger = Ledger()
        self.totals = FakeLedgerTotals()
        self.provider = FakeProvider()
        self.consumer = RevenueConsumer(engine, "unused:1", "billing-revenue", ["connects.ledger.v1"],
                                        service="billing-test", dlq_producer=CapturingDlq())
        self.reconciler = Reconciler(engine, self.totals, SqlAlchemyPurchaseLookup(engine), self.provider,
                                     clock=lambda: later(100), settle=timedelta(seconds=60))

    def feed(self, *msgs, to_billing: bool = True) -> None:
        self.totals.events.extend(msgs)
        if to_billing:
            self.consumer.apply_records(records(list(msgs)), None)

    def buy(self, pid: str, account: str, connects: int, cents: int, *, day: int = 1) -> None:
        insert_purchase(self.engine, pid, account, connects, cents, at=later(day))
        self.provider.pay(pid, cents, later(day))
        self.feed(self.ledger.credit(account, connects, lot=f"lot-{pid}", purchase_id=pid, at=later(day)))

    def kinds(self) -> list[tuple[str, str]]:
        response = self.reconciler.run()
        return sorted((billing_pb2.MismatchKind.Name(m.kind).removeprefix("MISMATCH_KIND_"), m.purchase_id)
                      for m in response.mismatches)


@pytest.fixture
def world(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path}/books.db")
    migrate_books(engine)
    w = World(engine)
    w.buy("p1", "a1", 40, 600)
    w.buy("p2", "a2", 20, 300)
    w.feed(w.ledger.spend("a1", [("lot-p1", PURCHASE, 10)], at=later(2)))
    w.feed(w.ledger.expire("a2", [("lot-p2", PURCHASE, 20)], at=later(50)))
    return w


def test_a_clean_run_reports_no_difference_and_the_totals_of_all_three_sides(world):
    response = world.reconciler.run()
    assert list(response.mismatches) == []
    assert response.accounts_checked == 2
    assert response.billing_purchased_connects == response.ledger_purchased_connects == 60
    assert response.billing_cash.amount_minor == response.provider_cash.amount_minor == 900


def test_a_completed_purchase_the_ledger_never_credited_is_a_missing_credit(world):
    insert_purchase(world.engine, "p3", "a3", 10, 150, at=later(3))
    world.provider.pay("p3", 150, later(3))
    assert world.kinds() == [("MISSING_CREDIT", "p3")]


def test_a_credit_whose_connects_differ_from_the_purchase_is_an_amount_difference(world):
    insert_purchase(world.engine, "p3", "a3", 10, 150, at=later(3))
    world.provider.pay("p3", 150, later(3))
    world.feed(world.ledger.credit("a3", 12, lot="lot-p3", purchase_id="p3", at=later(3)))
    assert world.kinds() == [("AMOUNT_DIFFERS", "p3")]


def test_a_purchase_credit_without_a_purchase_is_an_unknown_credit(world):
    world.feed(world.ledger.credit("a3", 10, lot="lot-ghost", purchase_id="ghost", at=later(3)))
    assert world.kinds() == [("UNKNOWN_CREDIT", "ghost")]


def test_a_credited_purchase_the_provider_never_captured_is_a_credit_without_payment(world):
    insert_purchase(world.engine, "p3", "a3", 10, 150, at=later(3))
    world.feed(world.ledger.credit("a3", 10, lot="lot-p3", purchase_id="p3", at=later(3)))
    assert world.kinds() == [("CREDIT_WITHOUT_PAYMENT", "p3")]


def test_a_captured_amount_other_than_the_price_is_a_payment_amount_difference(world):
    insert_purchase(world.engine, "p3", "a3", 10, 150, at=later(3))
    world.provider.pay("p3", 149, later(3))
    world.feed(world.ledger.credit("a3", 10, lot="lot-p3", purchase_id="p3", at=later(3)))
    response = world.reconciler.run()
    [m] = response.mismatches
    assert m.kind == billing_pb2.MISMATCH_KIND_PAYMENT_AMOUNT_DIFFERS
    assert (m.billing_amount.amount_minor, m.provider_amount.amount_minor) == (150, 149)


def test_a_dispute_whose_unspent_connects_stay_in_the_wallet_is_a_chargeback_not_clawed_back(world):
    world.provider.dispute("p1", 600, later(5))
    assert world.kinds() == [("CHARGEBACK_NOT_CLAWED_BACK", "p1")]


def test_a_ledger_event_billing_never_consumed_shows_as_a_deferred_difference(world):
    world.feed(world.ledger.spend("a1", [("lot-p1", PURCHASE, 5)], at=later(6)), to_billing=False)
    response = world.reconciler.run()
    [m] = response.mismatches
    assert m.kind == billing_pb2.MISMATCH_KIND_DEFERRED_DIFFERS and m.account_id == ""
    assert (m.billing_connects, m.ledger_connects) == (30, 25)


def test_facts_younger_than_the_settle_time_are_not_compared_yet(world):
    insert_purchase(world.engine, "p3", "a3", 10, 150, at=later(100) - timedelta(seconds=5))
    assert world.kinds() == []


def test_a_purchase_paid_before_the_cut_but_credited_after_it_is_in_flight_not_a_missing_credit(world):
    # An async card: the provider captured it a moment before the run's cut-off, billing credited it (webhook,
    # then the ledger) a moment after. Seen under load by tests/e2e/test_monitoring_live.py.
    cut = later(100) - timedelta(seconds=60)
    world.provider.pay("p3", 150, cut - timedelta(seconds=1))
    insert_purchase(world.engine, "p3", "a3", 10, 150, at=cut + timedelta(seconds=1))
    world.feed(world.ledger.credit("a3", 10, lot="lot-p3", purchase_id="p3", at=cut + timedelta(seconds=1)))
    assert world.kinds() == []
    world.reconciler.clock = lambda: later(101)  # the next run compares it, and it is clean
    assert world.kinds() == []


def test_a_purchase_paid_before_the_cut_and_never_credited_is_still_a_missing_credit(world):
    world.provider.pay("p3", 150, later(3))
    insert_purchase(world.engine, "p3", "a3", 10, 150, state="FAILED", at=later(100))
    assert world.kinds() == [("MISSING_CREDIT", "p3")]


def test_differences_are_recorded_published_and_exported(world):
    insert_purchase(world.engine, "p3", "a3", 10, 150, at=later(3))
    before = count(world.engine, OUTBOX)
    world.provider.pay("p3", 150, later(3))
    response = world.reconciler.run()
    with world.engine.connect() as conn:
        rows = conn.execute(sa.select(reconcile_mismatches.c.kind, reconcile_mismatches.c.purchase_id)).all()
    assert [tuple(r) for r in rows] == [("MISSING_CREDIT", "p3")]
    assert count(world.engine, OUTBOX) == before + 2  # ReconciliationMismatchFound + ReconciliationCompleted
    assert REGISTRY.get_sample_value("billing_reconciliation_mismatches_last_run",
                                     {"kind": "MISSING_CREDIT"}) == 1
    assert response.run_id


def test_a_retried_reconcile_returns_the_same_run(world):
    first = world.reconciler.run("req-1")
    insert_purchase(world.engine, "p3", "a3", 10, 150, at=later(3))
    again = world.reconciler.run("req-1")
    assert again == first
    assert world.reconciler.run("req-2").run_id != first.run_id


def test_a_second_run_while_one_is_active_is_refused(world):
    entered, release = threading.Event(), threading.Event()
    real = world.totals.ledger_totals

    def slow(start, end):
        entered.set()
        release.wait(5)
        return real(start, end)

    world.totals.ledger_totals = slow
    t = threading.Thread(target=world.reconciler.run)
    t.start()
    entered.wait(5)
    try:
        with pytest.raises(ReconciliationInProgress) as err:
            world.reconciler.run()
        assert err.value.reason == "RECONCILIATION_IN_PROGRESS"
    finally:
        release.set()
        t.join()


def test_an_unreachable_ledger_fails_the_run_and_the_scheduled_worker_counts_the_error(world):
    world.totals.unavailable = True
    with pytest.raises(Unavailable):
        world.reconciler.run()
    worker = ReconcileWorker(world.reconciler, service="billing-test-recon")
    with pytest.raises(Unavailable):
        worker.run_and_record()
    assert REGISTRY.get_sample_value("worker_runs_total", {"service": "billing-test-recon", "worker": "reconcile",
                                                           "outcome": "error"}) == 1
    world.totals.unavailable = False
    assert worker.run_and_record() is False and worker.last_run_id


def test_pending_purchases_paid_at_the_provider_are_in_flight_not_differences():
    got = rec.compare_purchases([rec.Purchase("p", "a", 10, 150, "PENDING")], [], [rec.Payment("p", 150)], [], {})
    assert got == []
    failed = rec.compare_purchases([rec.Purchase("p", "a", 10, 150, "FAILED")], [], [rec.Payment("p", 150)], [], {})
    assert [m.kind for m in failed] == [rec.MismatchKind.MISSING_CREDIT]


def test_a_dispute_whose_unspent_connects_the_ledger_reversed_reconciles_clean(world):
    insert_purchase(world.engine, "p3", "a3", 10, 150, at=later(3), state="CHARGED_BACK")
    world.provider.pay("p3", 150, later(3))
    credit = world.ledger.credit("a3", 10, lot="lot-p3", purchase_id="p3", at=later(3))
    world.feed(credit, world.ledger.spend("a3", [("lot-p3", PURCHASE, 4)], at=later(4)))
    world.provider.dispute("p3", 150, later(5))
    world.feed(world.ledger.reverse("a3", credit.transaction_id, [("lot-p3", PURCHASE, 6)], purchase_id="p3",
                                    at=later(5)))
    assert world.kinds() == []
    assert world.totals.ledger_totals(later(0), later(100)).reversed[0].connects == 6


def test_the_same_dispute_without_the_ledgers_reversal_in_its_totals_is_a_deferred_difference(world):
    insert_purchase(world.engine, "p3", "a3", 10, 150, at=later(3), state="CHARGED_BACK")
    world.provider.pay("p3", 150, later(3))
    credit = world.ledger.credit("a3", 10, lot="lot-p3", purchase_id="p3", at=later(3))
    world.feed(credit)
    world.provider.dispute("p3", 150, later(5))
    world.consumer.apply_records(records([world.ledger.reverse("a3", credit.transaction_id, [("lot-p3", PURCHASE, 10)],
                                                               purchase_id="p3", at=later(5))]), None)
    assert world.kinds() == [("DEFERRED_DIFFERS", "")]
