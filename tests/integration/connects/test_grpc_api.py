"""ConnectsService through real gRPC (kit server, auth, interceptors) on PostgreSQL and Kafka."""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import replace
from datetime import timedelta

import grpc
import pytest
import pytest_asyncio
from adsmon.connects.v1 import connects_pb2 as pb
from adsmon.connects.v1 import connects_pb2_grpc
from adsmon.marketplace.v1 import jobs_pb2
from google.protobuf.duration_pb2 import Duration
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from services.connects.adapters.topics import MARKETPLACE_JOBS
from services.connects.bootstrap import bootstrap
from services.connects.config import ConnectsConfig
from services.kit.clients import channel
from services.kit.kafka import encode_event, make_event, make_producer
from services.kit.server import Server
from tests.conftest import unique

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]
JOBS_TOPIC = os.environ["ADSMON_KAFKA_TOPIC_PREFIX"] + MARKETPLACE_JOBS


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server(create_database, auth_secret, kafka_bootstrap):
    env = {"ADSMON_CONNECTS_DATABASE_URL": create_database("connects_grpc"),
           "ADSMON_KAFKA_BOOTSTRAP": kafka_bootstrap, "ADSMON_AUTH_SECRET": auth_secret.decode(),
           "ADSMON_CONNECTS_EXPIRY_INTERVAL_SECONDS": "0.5", "ADSMON_KAFKA_GROUP_PREFIX": unique("test") + ".",
           "ADSMON_KAFKA_TOPIC_PREFIX": os.environ["ADSMON_KAFKA_TOPIC_PREFIX"]}
    config = ConnectsConfig.from_env(env)
    app = bootstrap(replace(config, base=replace(config.base, grpc_port=0, metrics_port=0)))
    app.drain_delay_seconds = 0
    srv = Server(app)
    await srv.start()
    yield app
    await srv.stop()


def stub_for(app, auth_secret, caller):
    return connects_pb2_grpc.ConnectsServiceStub(
        channel(f"127.0.0.1:{app.grpc_port}", secret=auth_secret, caller=caller))


@pytest.fixture
def stubs(server, auth_secret):
    return {name: stub_for(server, auth_secret, name) for name in ("billing", "ads", "marketplace")}


def error_of(exc: grpc.aio.AioRpcError) -> tuple[grpc.StatusCode, str, dict]:
    status = rpc_status.from_call(exc)
    assert status is not None, f"no rich status on {exc.code()}: {exc.details()}"
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    return exc.code(), info.reason, dict(info.metadata)


async def fund(stubs, account, amount):
    return await stubs["billing"].Credit(pb.CreditRequest(request_id=unique("r"), account_id=account, amount=amount,
                                                          source=pb.LOT_SOURCE_PURCHASE))


async def test_a_wallet_lifecycle_credit_spend_hold_capture_return_balance_and_history(stubs):
    acct = unique("acct")
    await fund(stubs, acct, 40)
    spend = await stubs["marketplace"].Spend(pb.SpendRequest(
        request_id=unique("r"), account_id=acct, amount=6, reason=pb.SPEND_REASON_PROPOSAL,
        reference="job:j1/proposal:p1"))
    assert spend.transaction.kind == pb.TRANSACTION_KIND_SPEND
    assert [(m.source, m.amount) for m in spend.transaction.lot_movements] == [(pb.LOT_SOURCE_PURCHASE, 6)]
    hold = await stubs["ads"].Hold(pb.HoldRequest(request_id=unique("r"), account_id=acct, amount=10,
                                                  reason=pb.SPEND_REASON_BOOST, ttl=Duration(seconds=3600)))
    await stubs["ads"].CaptureHold(pb.CaptureHoldRequest(request_id=unique("r"), hold_id=hold.hold_id, amount=7))
    await stubs["marketplace"].ReturnConnects(pb.ReturnConnectsRequest(
        request_id=unique("r"), spend_transaction_id=spend.transaction.transaction_id,
        reason=pb.RETURN_REASON_JOB_CANCELLED_BEFORE_CONTRACT))
    balance = await stubs["marketplace"].GetBalance(pb.GetBalanceRequest(account_id=acct))
    assert (balance.available, balance.held) == (33, 0)
    assert sorted(lot.source for lot in balance.lots) == [pb.LOT_SOURCE_PURCHASE, pb.LOT_SOURCE_RETURN]
    seen, token = [], ""
    while True:
        page = await stubs["marketplace"].ListTransactions(pb.ListTransactionsRequest(
            account_id=acct, page_size=2, page_token=token))
        seen += [t.kind for t in page.transactions]
        token = page.next_page_token
        if not token:
            break
    assert seen == [pb.TRANSACTION_KIND_RETURN, pb.TRANSACTION_KIND_CAPTURE, pb.TRANSACTION_KIND_HOLD,
                    pb.TRANSACTION_KIND_SPEND, pb.TRANSACTION_KIND_CREDIT]


async def test_a_repeated_request_returns_the_first_answer_and_a_changed_one_is_refused(stubs):
    acct = unique("acct")
    await fund(stubs, acct, 10)
    req = pb.SpendRequest(request_id=unique("r"), account_id=acct, amount=3, reason=pb.SPEND_REASON_PROPOSAL)
    first = await stubs["marketplace"].Spend(req)
    again = await stubs["marketplace"].Spend(req)
    assert again == first
    req.amount = 4
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stubs["marketplace"].Spend(req)
    assert error_of(exc.value)[:2] == (grpc.StatusCode.ALREADY_EXISTS, "REQUEST_ID_REUSED")


def _spend(**kw):
    base = {"request_id": unique("r"), "account_id": unique("a"), "amount": 1, "reason": pb.SPEND_REASON_PROPOSAL}
    return pb.SpendRequest(**{**base, **kw})


def _hold(**kw):
    base = {"request_id": unique("r"), "account_id": unique("a"), "amount": 1, "reason": pb.SPEND_REASON_PROPOSAL}
    return pb.HoldRequest(**{**base, **kw})


INVALID = grpc.StatusCode.INVALID_ARGUMENT
BAD_INPUTS = [
    ("Spend", _spend(amount=0), INVALID, "AMOUNT_NOT_POSITIVE", "amount"),
    ("Spend", _spend(amount=-5), INVALID, "AMOUNT_NOT_POSITIVE", "amount"),
    ("Spend", _spend(amount=-(2**63)), INVALID, "AMOUNT_NOT_POSITIVE", "amount"),
    ("Spend", _spend(reason=99), INVALID, "UNKNOWN_ENUM_VALUE", "reason"),
    ("Spend", _spend(reason=pb.SPEND_REASON_UNSPECIFIED), INVALID, "UNKNOWN_ENUM_VALUE", "reason"),
    ("Spend", _spend(request_id=""), INVALID, "INVALID_FIELD", "request_id"),
    ("Spend", _spend(account_id=""), INVALID, "INVALID_FIELD", "account_id"),
    ("Spend", _spend(account_id="a" * 129), INVALID, "FIELD_TOO_LONG", "account_id"),
    ("Spend", _spend(account_id="a" * 1_000_000), INVALID, "FIELD_TOO_LONG", "account_id"),
    ("Spend", _spend(request_id="r" * 129), INVALID, "FIELD_TOO_LONG", "request_id"),
    ("Spend", _spend(reference="x" * 257), INVALID, "FIELD_TOO_LONG", "reference"),
    ("Spend", _spend(amount=5), grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_CONNECTS", None),
    ("Credit", pb.CreditRequest(request_id="r", account_id="a", amount=1, source=42), INVALID,
     "UNKNOWN_ENUM_VALUE", "source"),
    ("Credit", pb.CreditRequest(request_id="r", account_id="a", amount=0, source=pb.LOT_SOURCE_BONUS), INVALID,
     "AMOUNT_NOT_POSITIVE", "amount"),
    ("Hold", _hold(ttl=Duration(seconds=-1)), INVALID, "TTL_OUT_OF_RANGE", "ttl"),
    ("Hold", _hold(ttl=Duration(seconds=91 * 86400)), INVALID, "TTL_OUT_OF_RANGE", "ttl"),
    ("Hold", _hold(ttl=Duration(seconds=315576000000)), INVALID, "TTL_OUT_OF_RANGE", "ttl"),
    ("Hold", _hold(amount=-1), INVALID, "AMOUNT_NOT_POSITIVE", "amount"),
    ("CaptureHold", pb.CaptureHoldRequest(request_id="r", hold_id="", amount=1), INVALID, "INVALID_FIELD",
     "hold_id"),
    ("CaptureHold", pb.CaptureHoldRequest(request_id=unique("r"), hold_id="nope", amount=1),
     grpc.StatusCode.NOT_FOUND, "HOLD_NOT_FOUND", None),
    ("CaptureHold", pb.CaptureHoldRequest(request_id="r", hold_id="h", amount=0), INVALID,
     "AMOUNT_NOT_POSITIVE", "amount"),
    ("ReleaseHold", pb.ReleaseHoldRequest(request_id=unique("r"), hold_id="nope"), grpc.StatusCode.NOT_FOUND,
     "HOLD_NOT_FOUND", None),
    ("ReturnConnects", pb.ReturnConnectsRequest(request_id=unique("r"), spend_transaction_id="nope",
                                                reason=pb.RETURN_REASON_JOB_REMOVED_TOS),
     grpc.StatusCode.NOT_FOUND, "TRANSACTION_NOT_FOUND", None),
    ("ReturnConnects", pb.ReturnConnectsRequest(request_id="r", spend_transaction_id="t", reason=77), INVALID,
     "UNKNOWN_ENUM_VALUE", "reason"),
    ("GetBalance", pb.GetBalanceRequest(account_id=""), INVALID, "INVALID_FIELD", "account_id"),
    ("ListTransactions", pb.ListTransactionsRequest(account_id="a", page_size=-1), INVALID, "INVALID_FIELD",
     "page_size"),
    ("ListTransactions", pb.ListTransactionsRequest(account_id="a", page_size=1001), INVALID, "INVALID_FIELD",
     "page_size"),
    ("ListTransactions", pb.ListTransactionsRequest(account_id="a", page_token="!!garbage"), INVALID,
     "INVALID_PAGE_TOKEN", "page_token"),
]


@pytest.mark.parametrize(("method", "request_", "code", "reason", "field"), BAD_INPUTS,
                         ids=[f"{m}-{r}-{i}" for i, (m, _, _, r, _) in enumerate(BAD_INPUTS)])
async def test_bad_input_is_refused_with_a_code_and_an_error_info_reason(stubs, method, request_, code, reason,
                                                                        field):
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        caller = {"Credit": "billing", "ReturnConnects": "marketplace"}.get(method, "ads")
        await getattr(stubs[caller], method)(request_)
    got_code, got_reason, metadata = error_of(exc.value)
    assert (got_code, got_reason) == (code, reason)
    if field:
        assert metadata["field"] == field


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


@pytest.mark.parametrize("wire_amount", [2**63, 2**64 - 1])
async def test_amounts_past_int64_on_the_wire_are_invalid_not_internal(server, auth_secret, wire_amount):
    """A client may encode any 64-bit varint; int64 wraps it to a negative number, refused as such."""
    body = (b"\x0a\x01r" + b"\x12\x01a" + b"\x18" + _varint(wire_amount) + b"\x20\x01")
    ch = channel(f"127.0.0.1:{server.grpc_port}", secret=auth_secret, caller="marketplace")
    raw = ch.unary_unary("/adsmon.connects.v1.ConnectsService/Spend", request_serializer=None,
                         response_deserializer=None)
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await raw(body)
    assert error_of(exc.value)[:2] == (INVALID, "AMOUNT_NOT_POSITIVE")


async def test_only_billing_credits_purchases_and_only_ads_holds_for_boosts(stubs):
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stubs["marketplace"].Credit(pb.CreditRequest(request_id=unique("r"), account_id="a", amount=1,
                                                           source=pb.LOT_SOURCE_PURCHASE))
    assert error_of(exc.value)[:2] == (grpc.StatusCode.PERMISSION_DENIED, "CALLER_NOT_ALLOWED")
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stubs["marketplace"].Hold(_hold(reason=pb.SPEND_REASON_BOOST))
    assert error_of(exc.value)[:2] == (grpc.StatusCode.PERMISSION_DENIED, "CALLER_NOT_ALLOWED")


async def test_capture_above_the_hold_and_double_release_are_failed_preconditions(stubs):
    acct = unique("acct")
    await fund(stubs, acct, 10)
    hold = await stubs["ads"].Hold(_hold(account_id=acct, amount=4, reason=pb.SPEND_REASON_BOOST))
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stubs["ads"].CaptureHold(pb.CaptureHoldRequest(request_id=unique("r"), hold_id=hold.hold_id, amount=5))
    assert error_of(exc.value)[:2] == (grpc.StatusCode.FAILED_PRECONDITION, "CAPTURE_EXCEEDS_HOLD")
    await stubs["ads"].ReleaseHold(pb.ReleaseHoldRequest(request_id=unique("r"), hold_id=hold.hold_id))
    for call in (stubs["ads"].ReleaseHold(pb.ReleaseHoldRequest(request_id=unique("r"), hold_id=hold.hold_id)),
                 stubs["ads"].CaptureHold(pb.CaptureHoldRequest(request_id=unique("r"), hold_id=hold.hold_id,
                                                                amount=1))):
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await call
        assert error_of(exc.value)[:2] == (grpc.StatusCode.FAILED_PRECONDITION, "HOLD_NOT_OPEN")


async def test_a_hold_past_its_ttl_is_released_by_the_sweeper(stubs):
    acct = unique("acct")
    await fund(stubs, acct, 10)
    await stubs["ads"].Hold(_hold(account_id=acct, amount=4, ttl=Duration(seconds=1)))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        balance = await stubs["ads"].GetBalance(pb.GetBalanceRequest(account_id=acct))
        if balance.held == 0:
            break
        await asyncio.sleep(0.2)
    assert (balance.available, balance.held) == (10, 0)


async def test_a_cancelled_job_returns_its_proposal_and_boost_spends_once(stubs, kafka_bootstrap):
    acct, job = unique("acct"), unique("job")
    await fund(stubs, acct, 30)
    await stubs["marketplace"].Spend(_spend(account_id=acct, amount=4, reference=f"job:{job}/proposal:p"))
    hold = await stubs["ads"].Hold(_hold(account_id=acct, amount=5, reason=pb.SPEND_REASON_BOOST,
                                         reference=f"job:{job}/proposal:p/boost"))
    await stubs["ads"].CaptureHold(pb.CaptureHoldRequest(request_id=unique("r"), hold_id=hold.hold_id, amount=5))
    await stubs["ads"].Spend(_spend(account_id=acct, amount=2, reason=pb.SPEND_REASON_BADGE))
    await stubs["marketplace"].Spend(_spend(account_id=acct, amount=1, reference="job:other"))
    producer = make_producer(kafka_bootstrap, client_id="connects-test")
    event = make_event(jobs_pb2.JobCancelled(job_id=job), job, "marketplace")
    for _ in range(2):  # a redelivery, or the marketplace sending twice with one event id
        producer.send(JOBS_TOPIC, key=job.encode(), value=encode_event(event))
    again = make_event(jobs_pb2.JobRemoved(job_id=job), job, "marketplace")
    producer.send(JOBS_TOPIC, key=job.encode(), value=encode_event(again))
    producer.flush(10)
    producer.close()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        balance = await stubs["ads"].GetBalance(pb.GetBalanceRequest(account_id=acct))
        if balance.available >= 27:
            break
        await asyncio.sleep(0.3)
    await asyncio.sleep(1.5)  # let the duplicate and the JobRemoved arrive too
    page = await stubs["ads"].ListTransactions(pb.ListTransactionsRequest(account_id=acct, page_size=100))
    returns = [t for t in page.transactions if t.kind == pb.TRANSACTION_KIND_RETURN]
    assert sorted(t.amount for t in returns) == [4, 5]
    assert all(t.return_reason == pb.RETURN_REASON_JOB_CANCELLED_BEFORE_CONTRACT for t in returns)
    balance = await stubs["ads"].GetBalance(pb.GetBalanceRequest(account_id=acct))
    assert balance.available == 30 - 2 - 1


async def test_hold_ttl_defaults_to_14_days(stubs):
    acct = unique("acct")
    await fund(stubs, acct, 10)
    hold = await stubs["ads"].Hold(_hold(account_id=acct, amount=1))
    ttl = hold.expires_at.ToDatetime() - hold.transaction.occurred_at.ToDatetime()
    assert ttl == timedelta(days=14)
