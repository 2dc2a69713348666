"""The connects API that ads and billing use, through real gRPC on PostgreSQL: the client port
(services.connects.client.GrpcConnectsClient) against a real server, built by bootstrap with an injected clock."""

from __future__ import annotations

import asyncio
import os
import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import grpc
import pytest
import pytest_asyncio
import sqlalchemy as sa
from adsmon.connects.v1 import connects_pb2 as pb
from adsmon.connects.v1 import connects_pb2_grpc
from google.protobuf.timestamp_pb2 import Timestamp

from services.connects.bootstrap import bootstrap
from services.connects.client import GrpcConnectsClient
from services.connects.config import ConnectsConfig
from services.kit import errors
from services.kit.clients import channel
from services.kit.server import Server
from tests.conftest import unique
from tests.integration.connects.conftest import error_of

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]
DAY = timedelta(days=1)


class Clock:
    """The server's clock: real time, shifted by what a test sets."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


@pytest.fixture(scope="module")
def clock() -> Clock:
    return Clock()


@pytest.fixture(scope="module")
def database_url(create_database) -> str:
    return create_database("connects_api")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server(database_url, auth_secret, kafka_bootstrap, clock):
    env = {"ADSMON_CONNECTS_DATABASE_URL": database_url, "ADSMON_KAFKA_BOOTSTRAP": kafka_bootstrap,
           "ADSMON_TRANSPORT": "plaintext",
           "ADSMON_AUTH_SECRET": auth_secret.decode(), "ADSMON_CONNECTS_CONSUME_JOBS": "false",
           "ADSMON_CONNECTS_EXPIRY_INTERVAL_SECONDS": "3600", "ADSMON_KAFKA_GROUP_PREFIX": unique("test") + ".",
           "ADSMON_KAFKA_TOPIC_PREFIX": os.environ["ADSMON_KAFKA_TOPIC_PREFIX"]}
    config = ConnectsConfig.from_env(env)
    app = bootstrap(replace(config, base=replace(config.base, grpc_port=0, metrics_port=0)), clock=clock)
    app.drain_delay_seconds = 0
    srv = Server(app)
    await srv.start()
    yield app
    await srv.stop()


@pytest.fixture(autouse=True)
def real_time(clock):
    clock.offset = timedelta(0)
    yield
    clock.offset = timedelta(0)


def client(server, auth_secret, caller: str) -> GrpcConnectsClient:
    return GrpcConnectsClient(f"127.0.0.1:{server.grpc_port}", secret=auth_secret, caller=caller)


@pytest.fixture
def ads(server, auth_secret):
    c = client(server, auth_secret, "ads")
    yield c
    c.close()


@pytest.fixture
def billing(server, auth_secret):
    c = client(server, auth_secret, "billing")
    yield c
    c.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stub(server, auth_secret):
    """stub(caller): a raw stub authenticated as `caller` (its channel is kept open until the module ends)."""
    channels: dict[str, grpc.aio.Channel] = {}

    def make(caller: str) -> connects_pb2_grpc.ConnectsServiceStub:
        if caller not in channels:
            channels[caller] = channel(f"127.0.0.1:{server.grpc_port}", secret=auth_secret, caller=caller)
        return connects_pb2_grpc.ConnectsServiceStub(channels[caller])

    yield make
    for ch in channels.values():
        await ch.close()


def ts(value: datetime) -> Timestamp:
    out = Timestamp()
    out.FromDatetime(value)
    return out


# The client is blocking (use cases run on worker threads): call it off the event loop the server runs on.
async def call(fn, *args):
    return await asyncio.to_thread(fn, *args)


async def test_ads_grows_a_boost_hold_through_the_client_idempotently_and_captures_it(ads, billing):
    acct = unique("acct")
    await call(billing.credit, unique("r"), acct, 30, "PURCHASE", "purchase:1")
    held = await call(ads.hold, unique("r"), acct, 5, "BOOST", "job:j/proposal:p/boost", timedelta(hours=2))
    rid = unique("ads:bid:raise")
    grown = await call(ads.increase_hold, rid, held.hold_id, 12)
    again = await call(ads.increase_hold, rid, held.hold_id, 12)
    assert grown == again and (grown.hold_id, grown.amount, grown.held_after, grown.available_after) == (
        held.hold_id, 7, 12, 18)
    same = await call(ads.increase_hold, unique("r"), held.hold_id, 12)
    assert (same.transaction_id, same.amount, same.hold_id) == ("", 0, held.hold_id), "a no-op answers no transaction"
    with pytest.raises(errors.AlreadyExists) as reused:
        await call(ads.increase_hold, rid, held.hold_id, 13)
    assert reused.value.reason == "REQUEST_ID_REUSED"
    with pytest.raises(errors.FailedPrecondition) as short:
        await call(ads.increase_hold, unique("r"), held.hold_id, 31)
    assert (short.value.reason, short.value.metadata["requested"], short.value.metadata["available"]) == (
        "INSUFFICIENT_CONNECTS", "19", "18")
    with pytest.raises(errors.FailedPrecondition) as lower:
        await call(ads.increase_hold, unique("r"), held.hold_id, 11)
    assert lower.value.reason == "HOLD_DECREASE_NOT_ALLOWED"
    captured = await call(ads.capture, unique("r"), held.hold_id, 12)
    assert (captured.amount, captured.available_after, captured.held_after) == (12, 18, 0)
    with pytest.raises(errors.FailedPrecondition) as closed:
        await call(ads.increase_hold, unique("r"), held.hold_id, 20)
    assert (closed.value.reason, closed.value.metadata["status"]) == ("HOLD_NOT_OPEN", "CAPTURED")
    balance = await call(ads.balance, acct)
    assert (balance.available, balance.held) == (18, 0)


async def test_only_ads_may_increase_a_boost_hold_and_an_unknown_hold_is_not_found(stub, ads, billing):
    acct = unique("acct")
    await call(billing.credit, unique("r"), acct, 10, "BONUS", "")
    held = await call(ads.hold, unique("r"), acct, 2, "BOOST", "", timedelta(hours=1))
    with pytest.raises(errors.PermissionDenied) as denied:
        await call(billing.increase_hold, unique("r"), held.hold_id, 3)
    assert denied.value.reason == "CALLER_NOT_ALLOWED"
    with pytest.raises(errors.NotFound) as missing:
        await call(ads.increase_hold, unique("r"), "no-such-hold", 3)
    assert missing.value.reason == "HOLD_NOT_FOUND"
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await stub("ads").IncreaseHold(pb.IncreaseHoldRequest(
            request_id=unique("r"), hold_id=held.hold_id, new_amount=0))
    assert error_of(bad.value) == (grpc.StatusCode.INVALID_ARGUMENT, "AMOUNT_NOT_POSITIVE", {"field": "new_amount"})


async def test_the_30_day_view_counts_held_connects_apart_from_available_ones_on_postgres(stub, clock, ads,
                                                                                         billing):
    acct = unique("acct")
    clock.offset = -350 * DAY  # this lot expires in 15 days
    await call(billing.credit, unique("r"), acct, 10, "PURCHASE", "")
    clock.offset = -340 * DAY  # in 25 days
    await call(billing.credit, unique("r"), acct, 8, "BONUS", "")
    clock.offset = -200 * DAY
    await call(billing.credit, unique("r"), acct, 20, "PLAN_GRANT", "")
    clock.offset = timedelta(0)
    held = await call(ads.hold, unique("r"), acct, 6, "BOOST", "", timedelta(days=30))
    await call(ads.increase_hold, unique("r"), held.hold_id, 14)  # 10 of the first lot, 4 of the second
    b = await stub("ads").GetBalance(pb.GetBalanceRequest(account_id=acct))
    assert (b.available, b.held) == (24, 14)
    assert (b.expiring_within_30_days, b.held_expiring_within_30_days) == (4, 14)
    assert [(lot.remaining, lot.held) for lot in b.lots] == [(0, 10), (4, 4), (20, 0)]


async def test_a_maximal_credit_from_an_allowed_caller_is_refused_and_changes_nothing(stub, database_url):
    acct = unique("acct")
    billing_stub = stub("billing")
    for amount in (2**63 - 1, 1_000_001):
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await billing_stub.Credit(pb.CreditRequest(request_id=unique("r"), account_id=acct, amount=amount,
                                                       source=pb.LOT_SOURCE_PURCHASE))
        assert error_of(exc.value) == (grpc.StatusCode.INVALID_ARGUMENT, "AMOUNT_TOO_LARGE",
                                       {"field": "amount", "maximum": "1000000"})
    ok = await billing_stub.Credit(pb.CreditRequest(request_id=unique("r"), account_id=acct, amount=1_000_000,
                                                    source=pb.LOT_SOURCE_PURCHASE))
    assert ok.transaction.available_after == 1_000_000
    with pytest.raises(grpc.aio.AioRpcError) as hold:
        await stub("marketplace").Hold(pb.HoldRequest(
            request_id=unique("r"), account_id=acct, amount=1_000_001, reason=pb.SPEND_REASON_PROPOSAL))
    assert error_of(hold.value)[1:] == ("AMOUNT_TOO_LARGE", {"field": "amount", "maximum": "1000000"})
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            count = conn.execute(sa.text("SELECT count(*) FROM ledger_transactions WHERE account_id = :a"),
                                 {"a": acct}).scalar_one()
    finally:
        engine.dispose()
    assert count == 1, "only the credit at the maximum was recorded"


async def test_billing_reads_the_ledger_totals_through_the_client_and_others_may_not(stub, clock, ads, billing):
    # A period of the server's clock that only this test writes in (other tests of the module share the database).
    clock.offset = 3000 * DAY + timedelta(seconds=random.randrange(86_400))
    start = clock()
    acct = unique("acct")
    await call(billing.credit, unique("r"), acct, 40, "PURCHASE", "")
    await call(billing.credit, unique("r"), acct, 10, "BONUS", "")
    await call(ads.spend, unique("r"), acct, 45, "BADGE", "")  # 40 PURCHASE, then 5 BONUS
    held = await call(ads.hold, unique("r"), acct, 2, "BOOST", "", timedelta(hours=1))
    await call(ads.increase_hold, unique("r"), held.hold_id, 4)
    end = clock() + timedelta(seconds=1)
    before = await call(billing.ledger_totals, start - DAY, start)
    totals = await call(billing.ledger_totals, start, end)
    assert (totals.start_time, totals.end_time) == (ts(start), ts(end))
    assert [(i.source, i.connects, i.transactions) for i in totals.issued] == [
        (pb.LOT_SOURCE_PURCHASE, 40, 1), (pb.LOT_SOURCE_BONUS, 10, 1)]
    assert [(s.reason, s.origin_source, s.connects) for s in totals.spent] == [
        (pb.SPEND_REASON_BADGE, pb.LOT_SOURCE_PURCHASE, 40), (pb.SPEND_REASON_BADGE, pb.LOT_SOURCE_BONUS, 5)]
    assert not totals.expired and not totals.returned
    balances = {b.ledger_account: b.balance for b in totals.system_balances}
    earlier = {b.ledger_account: b.balance for b in before.system_balances}
    assert {a: balances[a] - earlier[a] for a in balances} == {
        "system:issuance": -10, "system:sales": -40, "system:revenue": 45, "system:breakage": 0, "system:holds": 4}
    assert totals.held == balances["system:holds"] and totals.held - before.held == 4
    operator = stub("operator")
    assert await operator.GetLedgerTotals(pb.GetLedgerTotalsRequest(start_time=ts(start), end_time=ts(end))) == totals
    for caller in ("ads", "marketplace", "tests"):
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await stub(caller).GetLedgerTotals(pb.GetLedgerTotalsRequest(
                start_time=ts(start), end_time=ts(end)))
        assert error_of(denied.value)[:2] == (grpc.StatusCode.PERMISSION_DENIED, "CALLER_NOT_ALLOWED")
    with pytest.raises(errors.PermissionDenied) as via_client:
        await call(ads.ledger_totals, start, end)
    assert via_client.value.reason == "CALLER_NOT_ALLOWED"


@pytest.mark.parametrize(("request_", "field"), [
    (pb.GetLedgerTotalsRequest(end_time=Timestamp(seconds=100)), "start_time"),
    (pb.GetLedgerTotalsRequest(start_time=Timestamp(seconds=100)), "end_time"),
    (pb.GetLedgerTotalsRequest(start_time=Timestamp(seconds=100), end_time=Timestamp(seconds=99)), "end_time"),
    (pb.GetLedgerTotalsRequest(start_time=Timestamp(seconds=2**62), end_time=Timestamp(seconds=2**62)), "start_time"),
])
async def test_ledger_totals_refuse_a_missing_time_or_an_end_before_the_start(stub, request_, field):
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub("billing").GetLedgerTotals(request_)
    assert error_of(exc.value) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD", {"field": field})
