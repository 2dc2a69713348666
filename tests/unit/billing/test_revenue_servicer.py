"""The books' RPCs over gRPC (an in-process kit server): reports, statements, Reconcile, and clear refusals."""

from __future__ import annotations

from datetime import timedelta

import grpc
import pytest
from adsmon.billing.v1 import billing_pb2, billing_pb2_grpc
from adsmon.connects.v1 import connects_pb2 as pb
from google.protobuf import timestamp_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from services.billing.adapters.lookup import SqlAlchemyPurchaseLookup
from services.billing.entrypoints.revenue_consumer import RevenueConsumer
from services.billing.entrypoints.revenue_servicer import BooksServicer
from services.billing.service_layer.reconcile import Reconciler
from services.kit.auth import Policy, mint_token
from services.kit.db import make_engine
from services.kit.server import App, Server, ServiceRegistration
from tests.unit.billing.revenue_fakes import (
    T0,
    CapturingDlq,
    FakeLedgerTotals,
    FakeProvider,
    Ledger,
    insert_purchase,
    later,
    migrate_books,
    records,
)
from tests.unit.kit.test_server_interceptors import SECRET, config

SERVICE = billing_pb2.DESCRIPTOR.services_by_name["BillingService"].full_name


class Billing(billing_pb2_grpc.BillingServiceServicer):
    """What billing's servicer does at merge: the books' three methods delegated."""

    def __init__(self, books: BooksServicer) -> None:
        self.GetRevenueReport = books.GetRevenueReport
        self.GetStatement = books.GetStatement
        self.Reconcile = books.Reconcile


@pytest.fixture
async def stub(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path}/books.db")
    migrate_books(engine)
    ledger, totals, provider = Ledger(), FakeLedgerTotals(), FakeProvider()
    insert_purchase(engine, "p1", "a1", 40, 600, at=later(1))
    provider.pay("p1", 600, later(1))
    msgs = [ledger.credit("a1", 40, lot="L1", purchase_id="p1", at=later(1)),
            ledger.spend("a1", [("L1", pb.LOT_SOURCE_PURCHASE, 7)], reason=pb.SPEND_REASON_BOOST, at=later(2))]
    totals.events.extend(msgs)
    RevenueConsumer(engine, "unused:1", "g", ["connects.ledger.v1"], service="billing-test",
                    dlq_producer=CapturingDlq()).apply_records(records(msgs), None)
    lookup = SqlAlchemyPurchaseLookup(engine)
    books = BooksServicer(engine, lookup, Reconciler(engine, totals, lookup, provider, clock=lambda: later(10)))
    policy = Policy.build(SERVICE, default={"tests"})
    app = App(config(), [ServiceRegistration(SERVICE, billing_pb2_grpc.add_BillingServiceServicer_to_server,
                                             Billing(books), policy)], drain_delay_seconds=0.0)
    server = Server(app)
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}")
    yield billing_pb2_grpc.BillingServiceStub(channel)
    await channel.close()
    await server.stop()


MD = (("authorization", f"Bearer {mint_token(SECRET, 'tests')}"),)


def ts(value) -> timestamp_pb2.Timestamp:
    t = timestamp_pb2.Timestamp()
    t.FromDatetime(value)
    return t


def reason(err: grpc.aio.AioRpcError) -> tuple[grpc.StatusCode, str, dict[str, str]]:
    status = rpc_status.from_call(err)
    info = error_details_pb2.ErrorInfo()
    assert status is not None and status.details[0].Unpack(info)
    return err.code(), info.reason, dict(info.metadata)


async def test_the_revenue_report_answers_in_cents_by_product(stub):
    r = (await stub.GetRevenueReport(billing_pb2.GetRevenueReportRequest(start_time=ts(T0), end_time=ts(later(30))),
                                     metadata=MD)).report
    assert r.cash_received.amount_minor == 600 and r.cash_received.currency_code == "USD"
    assert [(p.product, p.connects, p.amount.amount_minor) for p in r.recognised] == \
           [(billing_pb2.PRODUCT_BOOSTS, 7, 105)]
    assert r.recognised_total.amount_minor == 105 and r.deferred_closing.amount_minor == 495


@pytest.mark.parametrize("start,end,field", [(None, later(1), "start_time"), (T0, None, "end_time"),
                                             (later(1), T0, "end_time")])
async def test_a_report_without_a_proper_period_is_invalid_argument_naming_the_field(stub, start, end, field):
    req = billing_pb2.GetRevenueReportRequest()
    if start:
        req.start_time.CopyFrom(ts(start))
    if end:
        req.end_time.CopyFrom(ts(end))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetRevenueReport(req, metadata=MD)
    assert reason(err.value) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD", {"field": field})


async def test_a_statement_lists_the_purchase_with_its_price_and_the_spend(stub):
    s = (await stub.GetStatement(billing_pb2.GetStatementRequest(account_id="a1", start_time=ts(T0),
                                                                 end_time=ts(later(30))), metadata=MD)).statement
    assert [(x.kind, x.connects_delta, x.amount.amount_minor) for x in s.lines] == [
        (billing_pb2.STATEMENT_LINE_KIND_PURCHASE, 40, 600), (billing_pb2.STATEMENT_LINE_KIND_SPEND, -7, 0)]
    assert s.lines[1].product == billing_pb2.PRODUCT_BOOSTS
    assert (s.opening_connects, s.closing_connects, s.purchases_total.amount_minor) == (0, 33, 600)


async def test_a_statement_over_a_year_long_or_without_account_is_refused(stub):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetStatement(billing_pb2.GetStatementRequest(
            account_id="a1", start_time=ts(T0), end_time=ts(T0 + timedelta(days=400))), metadata=MD)
    assert reason(err.value)[:2] == (grpc.StatusCode.INVALID_ARGUMENT, "STATEMENT_PERIOD_TOO_LONG")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetStatement(billing_pb2.GetStatementRequest(start_time=ts(T0), end_time=ts(later(1))),
                                metadata=MD)
    assert reason(err.value) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD", {"field": "account_id"})


async def test_reconcile_over_grpc_reports_clean_books_and_a_retry_gets_the_same_run(stub):
    first = await stub.Reconcile(billing_pb2.ReconcileRequest(request_id="r-1"), metadata=MD)
    assert list(first.mismatches) == [] and first.accounts_checked == 1
    again = await stub.Reconcile(billing_pb2.ReconcileRequest(request_id="r-1"), metadata=MD)
    assert again.run_id == first.run_id


def test_build_books_wires_the_servicer_the_consumer_and_the_scheduled_run_in_the_configured_namespaces(tmp_path):
    from services.billing.entrypoints.reconcile_worker import ReconcileWorker
    from services.billing.entrypoints.revenue_wiring import BooksSettings, build_books

    engine = make_engine(f"sqlite:///{tmp_path}/books.db")
    migrate_books(engine)
    base = config(service="billing", kafka_topic_prefix="ns.", kafka_group_prefix="grp-")
    servicer, components = build_books(base, engine, clock=lambda: T0, connects=FakeLedgerTotals(),
                                       purchases=SqlAlchemyPurchaseLookup(engine), provider=FakeProvider(),
                                       settings=BooksSettings(reconcile_interval=60.0, reconcile_settle=5.0))
    consumer, worker = components
    assert isinstance(servicer, BooksServicer) and isinstance(consumer, RevenueConsumer)
    assert consumer.topics == ["ns.connects.ledger.v1"] and consumer.group_id == "grp-billing-revenue"
    assert isinstance(worker, ReconcileWorker) and worker.interval == 60.0
    assert servicer.reconciler.settle == timedelta(seconds=5)


def test_books_settings_come_from_the_environment_and_bad_values_fail_fast():
    from services.billing.entrypoints.revenue_wiring import BooksSettings
    from services.kit.config import ConfigError

    got = BooksSettings.from_env({"ADSMON_BILLING_RECONCILE_INTERVAL_SECONDS": "120",
                                  "ADSMON_BILLING_RECONCILE_SETTLE_SECONDS": "0"})
    assert (got.reconcile_interval, got.reconcile_settle) == (120.0, 0.0)
    with pytest.raises(ConfigError):
        BooksSettings.from_env({"ADSMON_BILLING_RECONCILE_INTERVAL_SECONDS": "-1"})
