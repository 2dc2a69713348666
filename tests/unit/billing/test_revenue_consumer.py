"""The revenue consumer applies ledger batches once, and the reports read the journal to the cent."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa
from adsmon.billing.v1 import events_pb2 as billing_events
from adsmon.connects.v1 import connects_pb2 as pb

from services.billing.adapters.lookup import SqlAlchemyPurchaseLookup
from services.billing.adapters.revenue_tables import revenue_entries, revenue_lots, revenue_transactions
from services.billing.domain.revenue import Product
from services.billing.entrypoints.revenue_consumer import RevenueConsumer
from services.billing.service_layer import reports
from services.kit.consumer import PROCESSED
from services.kit.db import make_engine
from services.kit.errors import InvalidArgument
from services.kit.kafka import decode_event
from services.kit.outbox import OUTBOX
from tests.unit.billing.revenue_fakes import (
    T0,
    CapturingDlq,
    Ledger,
    Rec,
    count,
    insert_purchase,
    later,
    migrate_books,
    records,
)

PURCHASE, GRANT = pb.LOT_SOURCE_PURCHASE, pb.LOT_SOURCE_PLAN_GRANT


@pytest.fixture
def engine(tmp_path):
    eng = make_engine(f"sqlite:///{tmp_path}/books.db")
    migrate_books(eng)
    return eng


@pytest.fixture
def dlq():
    return CapturingDlq()


@pytest.fixture
def consumer(engine, dlq):
    return RevenueConsumer(engine, "unused:1", "billing-revenue", ["connects.ledger.v1"], service="billing-test",
                           dlq_producer=dlq, retry_initial=0.0, max_attempts=1)


def workload(engine):
    """Two accounts: purchases spent in part, expired, returned, spent from free lots too."""
    ledger = Ledger()
    insert_purchase(engine, "p1", "a1", 40, 600)
    insert_purchase(engine, "p2", "a2", 10, 150)
    msgs = [
        ledger.credit("a1", 40, lot="L1", purchase_id="p1", at=later(1)),
        ledger.credit("a1", 10, lot="G1", source=GRANT, at=later(1)),
        ledger.credit("a2", 10, lot="L2", purchase_id="p2", at=later(1)),
        ledger.spend("a1", [("L1", PURCHASE, 15)], at=later(2), tx_id="s1"),    # 15*600//40 = 225
        ledger.spend("a1", [("G1", GRANT, 10), ("L1", PURCHASE, 5)], reason=pb.SPEND_REASON_BOOST,
                     kind=pb.TRANSACTION_KIND_CAPTURE, at=later(3)),            # 5*375//25 = 75
        ledger.give_back("a1", "s1", [("R1", PURCHASE, 15)], at=later(4)),   # 225 back
        ledger.spend("a2", [("L2", PURCHASE, 3)], reason=pb.SPEND_REASON_BADGE, at=later(5)),  # 45
        ledger.expire("a2", [("L2", PURCHASE, 7)], at=later(40)),               # 105 breakage
    ]
    return ledger, msgs


def test_a_batch_of_ledger_events_is_applied_in_one_go_and_a_replay_changes_nothing(engine, consumer):
    _, msgs = workload(engine)
    consumer.apply_records(records(msgs), None)
    state = [count(engine, t) for t in (revenue_transactions, revenue_lots, revenue_entries, OUTBOX, PROCESSED)]
    assert state == [8, 3, 7, 4, 8]  # lots L1, L2, R1; outbox: 3 RevenueRecognised + 1 BreakageRecognised
    # The same records again (a redelivery), and the same transactions under new event ids (a re-send).
    consumer.apply_records(records(msgs), None)
    consumer.apply_records(records(msgs, start_offset=100), None)
    assert [count(engine, t) for t in (revenue_transactions, revenue_lots, revenue_entries, OUTBOX)] == state[:4]
    assert consumer.applied_total == 8


def test_the_revenue_report_splits_cash_into_recognised_by_product_breakage_and_deferred(engine, consumer):
    _, msgs = workload(engine)
    consumer.apply_records(records(msgs), None)
    r = reports.revenue_report(engine, SqlAlchemyPurchaseLookup(engine), T0, later(60))
    assert r.deferred_opening == 0 and r.cash_received == 750
    assert r.recognised == {Product.PROPOSALS: (0, 0), Product.BOOSTS: (5, 75), Product.BADGE: (3, 45)}
    assert (r.breakage_connects, r.breakage) == (7, 105)
    assert r.deferred_closing == 750 - 120 - 105 == 525
    # Split in two periods, the pieces add up and the first closing is the second opening.
    a = reports.revenue_report(engine, SqlAlchemyPurchaseLookup(engine), T0, later(3) + timedelta(hours=1))
    b = reports.revenue_report(engine, SqlAlchemyPurchaseLookup(engine), later(3) + timedelta(hours=1), later(60))
    assert a.deferred_closing == b.deferred_opening == 750 - 225 - 75
    assert a.recognised_total + b.recognised_total == r.recognised_total
    assert b.deferred_closing == r.deferred_closing


def test_revenue_recognised_events_carry_the_product_and_the_cents(engine, consumer):
    _, msgs = workload(engine)
    consumer.apply_records(records(msgs), None)
    with engine.connect() as conn:
        payloads = [decode_event(row.payload) for row in conn.execute(sa.select(OUTBOX).order_by(OUTBOX.c.id))]
    recognised = []
    for event in payloads:
        if event.type == "adsmon.billing.v1.RevenueRecognised":
            msg = billing_events.RevenueRecognised()
            event.payload.Unpack(msg)
            recognised.append((msg.account_id, msg.connects, msg.amount.amount_minor))
    assert recognised == [("a1", 15, 225), ("a1", 5, 75), ("a2", 3, 45)]


def test_a_statement_lists_the_accounts_movements_with_balances_and_money(engine, consumer):
    _, msgs = workload(engine)
    consumer.apply_records(records(msgs), None)
    s = reports.statement(engine, SqlAlchemyPurchaseLookup(engine), "a1", later(2), later(30))
    assert s.opening_connects == 50
    assert [(x.kind, x.connects_delta, x.cents) for x in s.lines] == [
        ("SPEND", -15, None), ("SPEND", -15, None), ("RETURN", 15, None)]
    assert s.closing_connects == 35
    whole = reports.statement(engine, SqlAlchemyPurchaseLookup(engine), "a1", T0, later(30))
    assert whole.purchases_total == 600 and whole.lines[0].kind == "PURCHASE"


def test_a_statement_longer_than_366_days_is_refused(engine):
    with pytest.raises(InvalidArgument) as err:
        reports.statement(engine, SqlAlchemyPurchaseLookup(engine), "a1", T0, T0 + timedelta(days=367))
    assert err.value.reason == "STATEMENT_PERIOD_TOO_LONG"


def test_an_undecodable_record_is_dead_lettered_and_the_rest_of_its_batch_applied(engine, consumer, dlq):
    _, msgs = workload(engine)
    batch = records(msgs[:3])
    batch.insert(1, ("tp0", Rec(b"\xff not an event", 50)))
    consumer.apply_records(batch, None)
    assert len(dlq.sent) == 1 and dlq.sent[0][0] == "connects.ledger.v1.dlq"
    assert count(engine, revenue_transactions) == 3


def test_a_failing_batch_is_applied_record_by_record(engine, consumer, monkeypatch):
    _, msgs = workload(engine)
    from services.billing.entrypoints import revenue_consumer as module
    real = module.apply_ledger_batch

    def fail_batches(conn, items, *, group, events_topic):  # the per-record path passes group=None
        if group is not None:
            raise RuntimeError("batch path broken")
        return real(conn, items, group=group, events_topic=events_topic)

    monkeypatch.setattr(module, "apply_ledger_batch", fail_batches)
    consumer.apply_records(records(msgs), None)
    assert count(engine, revenue_transactions) == 8 and count(engine, PROCESSED) == 8
    r = reports.revenue_report(engine, SqlAlchemyPurchaseLookup(engine), T0, later(60))
    assert r.deferred_closing == 525


class WithChargebacks(SqlAlchemyPurchaseLookup):
    """Billing's records plus chargebacks (the money-in half's table is not filled in these tests)."""

    def __init__(self, engine, chargebacks) -> None:
        super().__init__(engine)
        self.records = chargebacks

    def chargebacks_between(self, start, end):
        return [c for c in self.records if start <= c.recorded_at < end]


def chargeback(purchase_id: str, account: str, cents: int, loss: int, reversal: str = ""):
    from services.billing.service_layer.ports import ChargebackRecord
    return ChargebackRecord(f"cb-{purchase_id}", purchase_id, account, cents, "USD", 10, 0, 10, loss, "dsp", "RECORDED",
                            reversal, later(20), later(20))


def test_a_chargeback_of_a_fully_spent_purchase_is_a_loss_and_a_statement_line_from_billings_record(engine, consumer):
    _, msgs = workload(engine)
    consumer.apply_records(records(msgs), None)
    lookup = WithChargebacks(engine, [chargeback("p2", "a2", 150, 150),
                                      chargeback("p9", "a2", 90, 40, reversal="tx-rev")])  # the ledger's line
    r = reports.revenue_report(engine, lookup, T0, later(60))
    assert r.chargeback_loss == 150
    s = reports.statement(engine, lookup, "a2", T0, later(60))
    assert [(x.kind, x.connects_delta, x.cents, x.reference) for x in s.lines if x.kind == "CHARGEBACK"] == [
        ("CHARGEBACK", 0, 150, "p2")]


# -- the pipelined loop: the next poll is decoded while a batch is in its transaction ----------------------------


class PollingKafka:
    """A KafkaConsumer look-alike: `batches` one poll each; commits noted with what the books held at the time."""

    def __init__(self, engine, batches) -> None:
        self.engine = engine
        self.batches = list(batches)
        self.polls = 0
        self.commits: list[tuple[int, int]] = []  # (next offset committed, processed_events rows then)

    def poll(self, timeout_ms=0):
        self.polls += 1
        if self.batches:
            return {"tp0": [r for _, r in self.batches.pop(0)]}
        return {}

    def commit(self, offsets):
        self.commits.append((offsets["tp0"].offset, count(self.engine, PROCESSED)))

    def assignment(self):
        return set()


def pipelined(engine, dlq, kafka):
    c = RevenueConsumer(engine, "unused:1", "billing-revenue", ["connects.ledger.v1"], service="billing-test",
                        dlq_producer=dlq, retry_initial=0.0, max_attempts=1)
    c._consumer = kafka
    return c


def drain(c, want: int) -> None:
    for _ in range(50):
        if c.resolved_total >= want and c._in_flight is None:
            return
        c.poll_once()
    raise AssertionError(f"resolved {c.resolved_total} of {want}")


def test_pipelined_batches_are_applied_in_order_and_each_offset_committed_after_its_transaction(engine, dlq):
    _, msgs = workload(engine)
    recs = records(msgs)
    kafka = PollingKafka(engine, [recs[:3], recs[3:6], recs[6:]])
    c = pipelined(engine, dlq, kafka)
    drain(c, len(msgs))
    # Every commit came after its batch's rows were written: 3, 6, 8 records, in that order.
    assert kafka.commits == [(3, 3), (6, 6), (8, 8)]
    assert c.applied_total == 8
    r = reports.revenue_report(engine, SqlAlchemyPurchaseLookup(engine), T0, later(60))
    assert (r.cash_received, r.breakage, r.deferred_closing) == (750, 105, 525)


def test_the_next_batch_is_polled_and_decoded_while_the_previous_is_still_in_its_transaction(engine, dlq, monkeypatch):
    import threading

    from services.billing.entrypoints import revenue_consumer as module
    real = module.apply_ledger_batch
    inside, release = threading.Event(), threading.Event()

    def slow(conn, items, *, group, events_topic):
        inside.set()
        assert release.wait(5)
        return real(conn, items, group=group, events_topic=events_topic)

    monkeypatch.setattr(module, "apply_ledger_batch", slow)
    _, msgs = workload(engine)
    recs = records(msgs)
    kafka = PollingKafka(engine, [recs[:4], recs[4:]])
    c = pipelined(engine, dlq, kafka)
    decoded = []
    real_decode = c._decode
    c._decode = lambda rs: decoded.append(len(rs)) or real_decode(rs)  # type: ignore[method-assign]
    assert c.poll_once() == 0  # batch 1 handed to the applier
    assert inside.wait(5)
    worker = threading.Thread(target=c.poll_once)  # polls and decodes batch 2, then waits for batch 1
    worker.start()
    for _ in range(500):
        if decoded == [4, 4]:
            break
        threading.Event().wait(0.01)
    assert decoded == [4, 4] and kafka.commits == []  # batch 2 decoded; batch 1 not committed yet
    release.set()
    worker.join(5)
    drain(c, len(msgs))
    assert kafka.commits == [(4, 4), (8, 8)]


def test_a_pipelined_batchs_metrics_move_with_its_commit_not_a_poll_later(engine, dlq):
    from services.kit import consumer as kit_consumer

    applied = kit_consumer.processed_total.labels("billing-test", "connects.ledger.v1", "applied")
    _, msgs = workload(engine)
    kafka = PollingKafka(engine, [records(msgs)])
    c = pipelined(engine, dlq, kafka)
    before = applied._value.get()
    c.poll_once()
    assert c._in_flight is not None and c._in_flight.future is not None
    c._in_flight.future.result(5)
    # Committed in the books and counted, though not settled yet (its offsets wait for the next poll).
    assert kafka.commits == [] and c.applied_total == 8 and applied._value.get() - before == 8
    c.teardown()
    assert kafka.commits == [(8, 8)]


def test_a_stop_settles_the_batch_in_flight_and_commits_its_offsets(engine, dlq):
    _, msgs = workload(engine)
    kafka = PollingKafka(engine, [records(msgs)])
    c = pipelined(engine, dlq, kafka)
    c.poll_once()
    assert c._in_flight is not None
    c.teardown()
    assert kafka.commits == [(8, 8)] and c.resolved_total == 8 and c._applier is None


def test_without_the_pipeline_each_poll_is_applied_and_committed_before_the_next(engine, dlq):
    _, msgs = workload(engine)
    recs = records(msgs)
    kafka = PollingKafka(engine, [recs[:5], recs[5:]])
    c = pipelined(engine, dlq, kafka)
    c.pipeline = False
    assert c.poll_once() == 5 and kafka.commits == [(5, 5)]
    assert c.poll_once() == 3 and kafka.commits == [(5, 5), (8, 8)]
