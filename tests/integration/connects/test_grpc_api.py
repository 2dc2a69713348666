"""ConnectsService through real gRPC (kit server, auth, interceptors) on PostgreSQL and Kafka: the wallet
lifecycle, bad input, authorisation, request ids, pages, the expiring view, the jobs consumer, concurrency."""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import grpc
import pytest
import sqlalchemy as sa
from adsmon.connects.v1 import connects_pb2 as pb
from adsmon.marketplace.v1 import jobs_pb2
from google.protobuf.duration_pb2 import Duration

from services.connects.adapters.repository import SqlAlchemyLedgerUnitOfWork
from services.connects.adapters.topics import MARKETPLACE_JOBS
from services.connects.domain import commands as c
from services.connects.domain.commands import DEFAULT_MAX_AMOUNT
from services.connects.domain.model import MAX_CONNECTS, LotSource
from services.connects.service_layer import queries as q
from services.kit.clients import channel
from services.kit.consumer import TABLE_NAME as PROCESSED_EVENTS
from services.kit.kafka import encode_event, make_event, make_producer
from tests.conftest import unique
from tests.integration.connects.conftest import assert_books_balance, error_of, execute_one
from tests.integration.connects.conftest import grpc_fund as fund

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]
JOBS_TOPIC = os.environ["ADSMON_KAFKA_TOPIC_PREFIX"] + MARKETPLACE_JOBS


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


async def wait_until_processed(engine: sa.Engine, event_id: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            if conn.execute(sa.text(f"SELECT 1 FROM {PROCESSED_EVENTS} WHERE event_id = :e"),
                            {"e": event_id}).first():
                return
        await asyncio.sleep(0.2)
    raise AssertionError(f"event {event_id} not processed within {timeout}s")


async def test_a_cancelled_job_returns_its_proposal_and_boost_spends_once(stubs, kafka_bootstrap, server_engine):
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
    # Last on the same key (so the same partition, consumed in order): once it is processed, so are the others.
    marker = make_event(jobs_pb2.JobCancelled(job_id=unique("job")), job, "marketplace")
    producer.send(JOBS_TOPIC, key=job.encode(), value=encode_event(marker))
    producer.flush(10)
    producer.close()
    await wait_until_processed(server_engine, marker.event_id)
    with server_engine.connect() as conn:
        processed = set(conn.execute(sa.text(f"SELECT event_id FROM {PROCESSED_EVENTS} WHERE event_id IN "
                                             "(:a, :b, :m)"), {"a": event.event_id, "b": again.event_id,
                                                               "m": marker.event_id}).scalars())
    assert processed == {event.event_id, again.event_id, marker.event_id}
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


async def test_grpc_an_oversized_page_token_within_the_string_limit_is_invalid_page_token(stubs):
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stubs["marketplace"].ListTransactions(pb.ListTransactionsRequest(
            account_id="a", page_size=10, page_token="v1." + "A" * 4000))
    assert error_of(exc.value) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PAGE_TOKEN", {"field": "page_token"})


async def test_grpc_a_page_token_over_the_kit_string_limit_is_field_too_long(stubs):
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stubs["marketplace"].ListTransactions(pb.ListTransactionsRequest(
            account_id="a", page_size=10, page_token="v1." + "A" * 100_000))
    assert error_of(exc.value)[:2] == (grpc.StatusCode.INVALID_ARGUMENT, "FIELD_TOO_LONG")


async def test_grpc_a_well_formed_page_token_with_a_sequence_past_int64_is_invalid_argument(stubs):
    acct = unique("acct")
    await fund(stubs, acct, 1)
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stubs["marketplace"].ListTransactions(pb.ListTransactionsRequest(
            account_id=acct, page_size=10, page_token=q.encode_page_token(acct, 2**63)))
    assert error_of(exc.value) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PAGE_TOKEN", {"field": "page_token"})
    last = await stubs["marketplace"].ListTransactions(pb.ListTransactionsRequest(
        account_id=acct, page_size=10, page_token=q.encode_page_token(acct, 2**63 - 1)))
    assert [t.kind for t in last.transactions] == [pb.TRANSACTION_KIND_CREDIT]


async def test_grpc_replaying_an_ads_capture_as_marketplace_is_permission_denied(stubs):
    acct = unique("acct")
    await fund(stubs, acct, 10)
    hold = await stubs["ads"].Hold(pb.HoldRequest(request_id=unique("r"), account_id=acct, amount=4,
                                                  reason=pb.SPEND_REASON_BOOST))
    capture = pb.CaptureHoldRequest(request_id=unique("r"), hold_id=hold.hold_id, amount=4)
    await stubs["ads"].CaptureHold(capture)
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stubs["marketplace"].CaptureHold(capture)
    assert error_of(exc.value)[:2] == (grpc.StatusCode.PERMISSION_DENIED, "CALLER_NOT_ALLOWED")


async def test_grpc_request_id_reused_across_methods_and_accounts_is_already_exists(stubs):
    acct, other = unique("acct"), unique("acct")
    rid = unique("r")
    await stubs["billing"].Credit(pb.CreditRequest(request_id=rid, account_id=acct, amount=5,
                                                   source=pb.LOT_SOURCE_BONUS))
    calls = [
        stubs["billing"].Credit(pb.CreditRequest(request_id=rid, account_id=other, amount=5,
                                                 source=pb.LOT_SOURCE_BONUS)),
        stubs["marketplace"].Spend(pb.SpendRequest(request_id=rid, account_id=acct, amount=5,
                                                   reason=pb.SPEND_REASON_PROPOSAL)),
        stubs["ads"].Hold(pb.HoldRequest(request_id=rid, account_id=acct, amount=5, reason=pb.SPEND_REASON_BOOST)),
        stubs["ads"].ReleaseHold(pb.ReleaseHoldRequest(request_id=rid, hold_id="h")),
    ]
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await call
        assert error_of(exc.value)[:2] == (grpc.StatusCode.ALREADY_EXISTS, "REQUEST_ID_REUSED")
    other_balance = await stubs["ads"].GetBalance(pb.GetBalanceRequest(account_id=other))
    assert other_balance.available == 0


async def test_grpc_unknown_enum_numbers_and_unknown_accounts(stubs):
    for call in (stubs["ads"].Hold(pb.HoldRequest(request_id=unique("r"), account_id="a", amount=1, reason=99)),
                 stubs["ads"].Spend(pb.SpendRequest(request_id=unique("r"), account_id="a", amount=1, reason=-1)),
                 stubs["billing"].Credit(pb.CreditRequest(request_id=unique("r"), account_id="a", amount=1,
                                                          source=2**31 - 1))):
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await call
        assert error_of(exc.value)[:2] == (grpc.StatusCode.INVALID_ARGUMENT, "UNKNOWN_ENUM_VALUE")
    balance = await stubs["ads"].GetBalance(pb.GetBalanceRequest(account_id=unique("nobody")))
    assert (balance.available, balance.held, len(balance.lots), balance.expiring_within_30_days) == (0, 0, 0, 0)
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stubs["ads"].GetBalance(pb.GetBalanceRequest(account_id="x" * 129))
    assert error_of(exc.value)[:2] == (grpc.StatusCode.INVALID_ARGUMENT, "FIELD_TOO_LONG")


async def test_grpc_business_max_credit_hold_capture_and_concurrent_duplicates(stubs):
    acct = unique("acct")
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stubs["billing"].Credit(pb.CreditRequest(request_id=unique("r"), account_id=acct, amount=MAX_CONNECTS,
                                                       source=pb.LOT_SOURCE_BONUS))
    assert error_of(exc.value)[:2] == (grpc.StatusCode.INVALID_ARGUMENT, "AMOUNT_TOO_LARGE")
    await stubs["billing"].Credit(pb.CreditRequest(request_id=unique("r"), account_id=acct,
                                                   amount=DEFAULT_MAX_AMOUNT, source=pb.LOT_SOURCE_BONUS))
    hold_req = pb.HoldRequest(request_id=unique("r"), account_id=acct, amount=DEFAULT_MAX_AMOUNT,
                              reason=pb.SPEND_REASON_BOOST, ttl=Duration(seconds=3600))
    holds = await asyncio.gather(*(stubs["ads"].Hold(hold_req) for _ in range(8)))
    assert len({h.hold_id for h in holds}) == 1
    capture = pb.CaptureHoldRequest(request_id=unique("r"), hold_id=holds[0].hold_id, amount=DEFAULT_MAX_AMOUNT - 1)
    caps = await asyncio.gather(*(stubs["ads"].CaptureHold(capture) for _ in range(8)))
    assert len({x.transaction.transaction_id for x in caps}) == 1
    balance = await stubs["ads"].GetBalance(pb.GetBalanceRequest(account_id=acct))
    assert (balance.available, balance.held) == (1, 0)


async def test_grpc_mixed_concurrent_workload_on_one_wallet_conserves_connects(stubs):
    acct = unique("acct")
    await fund(stubs, acct, 100)

    async def one(i):
        try:
            if i % 3 == 0:
                await stubs["marketplace"].Spend(pb.SpendRequest(request_id=unique("r"), account_id=acct, amount=3,
                                                                 reason=pb.SPEND_REASON_PROPOSAL))
                return ("spend", 3)
            hold = await stubs["ads"].Hold(pb.HoldRequest(request_id=unique("r"), account_id=acct, amount=4,
                                                          reason=pb.SPEND_REASON_BOOST))
            if i % 3 == 1:
                await stubs["ads"].CaptureHold(pb.CaptureHoldRequest(request_id=unique("r"), hold_id=hold.hold_id,
                                                                     amount=2))
                return ("capture", 2)
            await stubs["ads"].ReleaseHold(pb.ReleaseHoldRequest(request_id=unique("r"), hold_id=hold.hold_id))
            return ("release", 0)
        except grpc.aio.AioRpcError as exc:
            assert error_of(exc)[:2] == (grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_CONNECTS")
            return ("refused", 0)

    results = await asyncio.gather(*(one(i) for i in range(60)))
    used = sum(amount for _, amount in results)
    balance = await stubs["ads"].GetBalance(pb.GetBalanceRequest(account_id=acct))
    assert (balance.available, balance.held) == (100 - used, 0)
    assert Counter(kind for kind, _ in results)["spend"] + Counter(k for k, _ in results)["capture"] > 0


async def test_grpc_only_marketplace_and_operator_may_return_connects(stubs):
    acct = unique("acct")
    await fund(stubs, acct, 10)
    spends = [await stubs["marketplace"].Spend(pb.SpendRequest(request_id=unique("r"), account_id=acct, amount=2,
                                                               reason=pb.SPEND_REASON_PROPOSAL))
              for _ in range(2)]

    def ret(spend):
        return pb.ReturnConnectsRequest(request_id=unique("r"), spend_transaction_id=spend.transaction.transaction_id,
                                        reason=pb.RETURN_REASON_JOB_REMOVED_TOS)

    for caller in ("ads", "billing"):
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await stubs[caller].ReturnConnects(ret(spends[0]))
        assert error_of(exc.value)[:2] == (grpc.StatusCode.PERMISSION_DENIED, "CALLER_NOT_ALLOWED")
    await stubs["marketplace"].ReturnConnects(ret(spends[0]))
    await stubs["operator"].ReturnConnects(ret(spends[1]))
    balance = await stubs["marketplace"].GetBalance(pb.GetBalanceRequest(account_id=acct))
    assert balance.available == 10


async def test_grpc_credit_cannot_make_return_lots_and_reserved_request_ids_are_refused(stubs):
    acct = unique("acct")
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stubs["billing"].Credit(pb.CreditRequest(request_id=unique("r"), account_id=acct, amount=5,
                                                       source=pb.LOT_SOURCE_RETURN))
    assert error_of(exc.value)[:2] == (grpc.StatusCode.INVALID_ARGUMENT, "SOURCE_NOT_ALLOWED")
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stubs["billing"].Credit(pb.CreditRequest(request_id=f"{c.RESERVED_REQUEST_ID_PREFIX}job-return:x",
                                                       account_id=acct, amount=5, source=pb.LOT_SOURCE_BONUS))
    assert error_of(exc.value)[:2] == (grpc.StatusCode.INVALID_ARGUMENT, "RESERVED_REQUEST_ID")
    balance = await stubs["billing"].GetBalance(pb.GetBalanceRequest(account_id=acct))
    assert (balance.available, len(balance.lots)) == (0, 0)


async def test_the_30_day_expiring_view_on_postgres_counts_only_lots_due_in_the_window(stubs, server_engine):
    """Lots dated in the past are written on the server's database (the RPCs date lots now); the view is read
    through GetBalance."""
    acct, now = unique("acct"), datetime.now(UTC)
    for age_days, amount in ((340, 7), (336, 5), (330, 3), (100, 11)):  # due in 25, 29, 35 and 265 days
        out = execute_one(lambda: SqlAlchemyLedgerUnitOfWork(server_engine),
                          c.Credit(unique("r"), acct, amount, LotSource.BONUS), at=now - timedelta(days=age_days))
        assert out.error is None, out.error
    await stubs["marketplace"].Hold(pb.HoldRequest(request_id=unique("r"), account_id=acct, amount=4,
                                                   reason=pb.SPEND_REASON_PROPOSAL))  # from the 7-lot, oldest
    balance = await stubs["marketplace"].GetBalance(pb.GetBalanceRequest(account_id=acct))
    assert (balance.available, balance.held) == (7 + 5 + 3 + 11 - 4, 4)
    assert balance.expiring_within_30_days == (7 - 4) + 5
    assert sum(lot.remaining for lot in balance.lots) == balance.available
    assert_books_balance(server_engine)
