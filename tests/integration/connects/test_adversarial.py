"""Adversarial tests of the Connects ledger on real PostgreSQL (and through real gRPC).

Several reproduce bugs an adversarial review found (each was an
xfail(strict=True) test until fixed) or the design gaps it raised.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import timedelta

import grpc
import pytest
import pytest_asyncio
import sqlalchemy as sa
from adsmon.connects.v1 import connects_pb2 as pb
from adsmon.connects.v1 import connects_pb2_grpc
from google.protobuf.duration_pb2 import Duration
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from services.connects.bootstrap import bootstrap
from services.connects.config import ConnectsConfig
from services.connects.domain import commands as c
from services.connects.domain.commands import DEFAULT_MAX_AMOUNT
from services.connects.domain.model import MAX_CONNECTS, HoldStatus, LotSource, SpendReason
from services.connects.service_layer import handlers
from services.connects.service_layer import queries as q
from services.connects.service_layer.handlers import Envelope
from services.kit.clients import channel
from services.kit.errors import InvalidArgument
from services.kit.server import Server
from tests.conftest import unique
from tests.integration.connects.conftest import assert_books_balance, execute_one, now

pytestmark = pytest.mark.integration


def ok(outcome):
    assert outcome.error is None, outcome.error
    return outcome.receipt


def token(body: object) -> str:
    raw = body if isinstance(body, str) else json.dumps(body)
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


# ----- the ledger on PostgreSQL (handlers + SQL adapter) ----------------------------------------------------------


def test_maximal_credits_on_two_accounts_keep_the_books_and_the_second_credit_to_one_is_refused(uow_factory, engine,
                                                                                                 queries):
    a, b = unique("a"), unique("b")
    ok(execute_one(uow_factory, c.Credit(unique("r"), a, MAX_CONNECTS, LotSource.BONUS)))
    ok(execute_one(uow_factory, c.Credit(unique("r"), b, MAX_CONNECTS, LotSource.PLAN_GRANT)))
    refused = execute_one(uow_factory, c.Credit(unique("r"), a, MAX_CONNECTS, LotSource.BONUS))
    assert refused.error.reason == "BALANCE_LIMIT_EXCEEDED"
    ok(execute_one(uow_factory, c.PlaceHold(unique("r"), a, MAX_CONNECTS - 1, SpendReason.PROPOSAL)))
    ok(execute_one(uow_factory, c.Spend(unique("r"), a, 1, SpendReason.PROPOSAL)))
    balance = q.get_balance(queries, a, now())
    assert (balance.available, balance.held) == (0, MAX_CONNECTS - 1)
    assert queries.system_balances()["system:issuance"] <= -2 * MAX_CONNECTS
    assert_books_balance(engine)


@pytest.mark.parametrize("round_", range(3))
def test_capture_racing_the_hold_expiry_sweep_resolves_the_hold_once(uow_factory, engine, round_):
    acct = unique("acct")
    ok(execute_one(uow_factory, c.Credit(unique("r"), acct, 10, LotSource.PLAN_GRANT)))
    hold_id = ok(execute_one(uow_factory, c.PlaceHold(unique("r"), acct, 6, SpendReason.BOOST,
                                                      ttl=timedelta(seconds=1)), caller="ads")).hold_id
    at = now() + timedelta(seconds=1)  # exactly at the ttl: both consider it due
    barrier = threading.Barrier(8)

    def act(i):
        barrier.wait()
        cmd = c.CaptureHold(unique("r"), hold_id, 6) if i % 2 else c.ExpireHold(hold_id)
        return execute_one(uow_factory, cmd, caller="ads" if i % 2 else "connects", at=at)

    with ThreadPoolExecutor(8) as pool:
        outs = list(pool.map(act, range(8)))
    assert all(o.error is None or o.error.reason in ("HOLD_EXPIRED", "HOLD_NOT_OPEN") for o in outs)
    with engine.connect() as conn:
        kinds = conn.execute(sa.text("SELECT kind FROM ledger_transactions WHERE hold_id = :h"),
                             {"h": hold_id}).scalars().all()
        status = conn.execute(sa.text("SELECT status FROM holds WHERE hold_id = :h"), {"h": hold_id}).scalar_one()
    assert sorted(kinds) == ["HOLD", "RELEASE"] and status == HoldStatus.EXPIRED.value
    assert_books_balance(engine)


def test_spends_racing_the_lot_expiry_sweep_never_use_expired_connects(uow_factory, engine, queries):
    acct = unique("acct")
    at = now()
    ok(execute_one(uow_factory, c.Credit(unique("r"), acct, 10, LotSource.BONUS), at=at - timedelta(days=365)))
    ok(execute_one(uow_factory, c.Credit(unique("r"), acct, 5, LotSource.BONUS), at=at))
    barrier = threading.Barrier(10)

    def act(i):
        barrier.wait()
        cmd = c.Spend(unique("r"), acct, 1, SpendReason.PROPOSAL) if i % 2 else c.ExpireLots(acct)
        return execute_one(uow_factory, cmd, caller="connects", at=at + timedelta(seconds=1))

    with ThreadPoolExecutor(10) as pool:
        outs = list(pool.map(act, range(10)))
    assert all(o.error is None for o in outs)
    with engine.connect() as conn:
        expired = conn.execute(sa.text("SELECT coalesce(sum(amount), 0) FROM ledger_transactions "
                                       "WHERE account_id = :a AND kind = 'EXPIRE'"), {"a": acct}).scalar_one()
    assert expired == 10
    assert q.get_balance(queries, acct, at + timedelta(seconds=1)).available == 0
    assert_books_balance(engine)


def test_history_pages_have_no_duplicates_or_gaps_while_new_transactions_arrive(uow_factory, queries):
    acct = unique("acct")
    for _ in range(20):
        ok(execute_one(uow_factory, c.Credit(unique("r"), acct, 1, LotSource.BONUS)))
    stop = threading.Event()

    def writer():
        while not stop.is_set():
            execute_one(uow_factory, c.Credit(unique("r"), acct, 1, LotSource.BONUS))

    seen: list[int] = []
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(writer) for _ in range(2)]
        page = q.list_transactions(queries, acct, 3, "")
        first_seq = page.transactions[0].sequence
        while True:
            seen += [t.sequence for t in page.transactions]
            if not page.next_page_token:
                break
            page = q.list_transactions(queries, acct, 3, page.next_page_token)
        stop.set()
        for f in futures:
            f.result()
    assert seen == list(range(first_seq, 0, -1))


def test_a_page_token_with_a_sequence_past_int64_is_invalid_argument_on_postgres(uow_factory, queries):
    acct = unique("acct")
    ok(execute_one(uow_factory, c.Credit(unique("r"), acct, 1, LotSource.BONUS)))
    with pytest.raises(InvalidArgument) as exc:
        q.list_transactions(queries, acct, 10, token({"a": acct, "s": 2**63}))
    assert exc.value.reason == "INVALID_PAGE_TOKEN"


def test_a_v1_page_token_with_a_sequence_past_int64_is_invalid_argument_on_postgres(uow_factory, queries):
    acct = unique("acct")
    ok(execute_one(uow_factory, c.Credit(unique("r"), acct, 1, LotSource.BONUS)))
    for sequence in (2**63, 10**19 - 1):
        with pytest.raises(InvalidArgument) as exc:
            q.list_transactions(queries, acct, 10, q.encode_page_token(acct, sequence))
        assert exc.value.reason == "INVALID_PAGE_TOKEN"
    page = q.list_transactions(queries, acct, 10, q.encode_page_token(acct, 2**63 - 1))
    assert [t.sequence for t in page.transactions] == [1]


def test_refused_spends_and_holds_on_unknown_accounts_leave_no_wallet_row(uow_factory, engine):
    ghost, fresh = unique("ghost"), unique("fresh")
    batch = [c.Spend(unique("r"), ghost, 1, SpendReason.PROPOSAL), c.PlaceHold(unique("r"), ghost, 1,
                                                                               SpendReason.PROPOSAL),
             c.Credit(unique("r"), fresh, 2, LotSource.BONUS), c.Spend(unique("r"), fresh, 1, SpendReason.PROPOSAL)]
    outs = handlers.execute(uow_factory(), [Envelope(cmd, "tests") for cmd in batch], now())
    assert [o.error.reason if o.error else "OK" for o in outs] == ["INSUFFICIENT_CONNECTS"] * 2 + ["OK", "OK"]
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT account_id FROM wallets WHERE account_id IN (:g, :f)"),
                            {"g": ghost, "f": fresh}).scalars().all()
    assert rows == [fresh]


def test_a_release_past_the_ttl_expires_the_hold_like_a_capture_would(uow_factory, engine, queries):
    acct = unique("acct")
    ok(execute_one(uow_factory, c.Credit(unique("r"), acct, 10, LotSource.PLAN_GRANT)))
    hold_id = ok(execute_one(uow_factory, c.PlaceHold(unique("r"), acct, 6, SpendReason.BOOST,
                                                      ttl=timedelta(seconds=1)), caller="ads")).hold_id
    out = execute_one(uow_factory, c.ReleaseHold(unique("r"), hold_id), caller="ads", at=now() + timedelta(seconds=2))
    assert (out.error.code, out.error.reason) == ("FAILED_PRECONDITION", "HOLD_EXPIRED")
    with engine.connect() as conn:
        status = conn.execute(sa.text("SELECT status FROM holds WHERE hold_id = :h"), {"h": hold_id}).scalar_one()
    assert status == HoldStatus.EXPIRED.value
    assert hold_id not in queries.due_holds(now() + timedelta(seconds=2), 1000)
    assert q.get_balance(queries, acct, now()).available == 10
    assert_books_balance(engine)


# ----- through gRPC -----------------------------------------------------------------------------------------------


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server(create_database, auth_secret, kafka_bootstrap):
    env = {"ADSMON_CONNECTS_DATABASE_URL": create_database("connects_adv"),
           "ADSMON_KAFKA_BOOTSTRAP": kafka_bootstrap, "ADSMON_AUTH_SECRET": auth_secret.decode(),
           "ADSMON_CONNECTS_EXPIRY_INTERVAL_SECONDS": "3600", "ADSMON_CONNECTS_CONSUME_JOBS": "false"}
    config = ConnectsConfig.from_env(env)
    app = bootstrap(replace(config, base=replace(config.base, grpc_port=0, metrics_port=0)))
    app.drain_delay_seconds = 0
    srv = Server(app)
    await srv.start()
    yield app
    await srv.stop()


@pytest.fixture
def stubs(server, auth_secret):
    return {name: connects_pb2_grpc.ConnectsServiceStub(
        channel(f"127.0.0.1:{server.grpc_port}", secret=auth_secret, caller=name))
        for name in ("billing", "ads", "marketplace", "operator")}


def error_of(exc: grpc.aio.AioRpcError) -> tuple[grpc.StatusCode, str]:
    status = rpc_status.from_call(exc)
    assert status is not None, f"no rich status on {exc.code()}: {exc.details()}"
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    return exc.code(), info.reason


async def fund(stubs, account, amount):
    return await stubs["billing"].Credit(pb.CreditRequest(request_id=unique("r"), account_id=account, amount=amount,
                                                          source=pb.LOT_SOURCE_PURCHASE))


grpc_test = pytest.mark.asyncio(loop_scope="module")


@grpc_test
async def test_grpc_a_tampered_deeply_nested_page_token_is_invalid_argument(stubs):
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stubs["marketplace"].ListTransactions(pb.ListTransactionsRequest(
            account_id="a", page_size=10, page_token=token("[" * 50_000 + "]" * 50_000)))
    assert error_of(exc.value) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PAGE_TOKEN")


@grpc_test
async def test_grpc_a_page_token_with_a_sequence_past_int64_is_invalid_argument(stubs):
    acct = unique("acct")
    await fund(stubs, acct, 1)
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stubs["marketplace"].ListTransactions(pb.ListTransactionsRequest(
            account_id=acct, page_size=10, page_token=token({"a": acct, "s": 2**63})))
    assert error_of(exc.value) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PAGE_TOKEN")


@grpc_test
async def test_grpc_replaying_an_ads_capture_as_marketplace_is_permission_denied(stubs):
    acct = unique("acct")
    await fund(stubs, acct, 10)
    hold = await stubs["ads"].Hold(pb.HoldRequest(request_id=unique("r"), account_id=acct, amount=4,
                                                  reason=pb.SPEND_REASON_BOOST))
    capture = pb.CaptureHoldRequest(request_id=unique("r"), hold_id=hold.hold_id, amount=4)
    await stubs["ads"].CaptureHold(capture)
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stubs["marketplace"].CaptureHold(capture)
    assert error_of(exc.value) == (grpc.StatusCode.PERMISSION_DENIED, "CALLER_NOT_ALLOWED")


@grpc_test
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
        assert error_of(exc.value) == (grpc.StatusCode.ALREADY_EXISTS, "REQUEST_ID_REUSED")
    other_balance = await stubs["ads"].GetBalance(pb.GetBalanceRequest(account_id=other))
    assert other_balance.available == 0


@grpc_test
async def test_grpc_unknown_enum_numbers_and_unknown_accounts(stubs):
    for call in (stubs["ads"].Hold(pb.HoldRequest(request_id=unique("r"), account_id="a", amount=1, reason=99)),
                 stubs["ads"].Spend(pb.SpendRequest(request_id=unique("r"), account_id="a", amount=1, reason=-1)),
                 stubs["billing"].Credit(pb.CreditRequest(request_id=unique("r"), account_id="a", amount=1,
                                                          source=2**31 - 1))):
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await call
        assert error_of(exc.value) == (grpc.StatusCode.INVALID_ARGUMENT, "UNKNOWN_ENUM_VALUE")
    balance = await stubs["ads"].GetBalance(pb.GetBalanceRequest(account_id=unique("nobody")))
    assert (balance.available, balance.held, len(balance.lots), balance.expiring_within_30_days) == (0, 0, 0, 0)
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stubs["ads"].GetBalance(pb.GetBalanceRequest(account_id="x" * 129))
    assert error_of(exc.value) == (grpc.StatusCode.INVALID_ARGUMENT, "FIELD_TOO_LONG")


@grpc_test
async def test_grpc_business_max_credit_hold_capture_and_concurrent_duplicates(stubs):
    acct = unique("acct")
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stubs["billing"].Credit(pb.CreditRequest(request_id=unique("r"), account_id=acct, amount=MAX_CONNECTS,
                                                       source=pb.LOT_SOURCE_BONUS))
    assert error_of(exc.value) == (grpc.StatusCode.INVALID_ARGUMENT, "AMOUNT_TOO_LARGE")
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


@grpc_test
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
            assert error_of(exc) == (grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_CONNECTS")
            return ("refused", 0)

    results = await asyncio.gather(*(one(i) for i in range(60)))
    used = sum(amount for _, amount in results)
    balance = await stubs["ads"].GetBalance(pb.GetBalanceRequest(account_id=acct))
    assert (balance.available, balance.held) == (100 - used, 0)
    assert Counter(kind for kind, _ in results)["spend"] + Counter(k for k, _ in results)["capture"] > 0


@grpc_test
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
        assert error_of(exc.value) == (grpc.StatusCode.PERMISSION_DENIED, "CALLER_NOT_ALLOWED")
    await stubs["marketplace"].ReturnConnects(ret(spends[0]))
    await stubs["operator"].ReturnConnects(ret(spends[1]))
    balance = await stubs["marketplace"].GetBalance(pb.GetBalanceRequest(account_id=acct))
    assert balance.available == 10


@grpc_test
async def test_grpc_credit_cannot_make_return_lots_and_reserved_request_ids_are_refused(stubs):
    acct = unique("acct")
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stubs["billing"].Credit(pb.CreditRequest(request_id=unique("r"), account_id=acct, amount=5,
                                                       source=pb.LOT_SOURCE_RETURN))
    assert error_of(exc.value) == (grpc.StatusCode.INVALID_ARGUMENT, "SOURCE_NOT_ALLOWED")
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stubs["billing"].Credit(pb.CreditRequest(request_id=f"{c.RESERVED_REQUEST_ID_PREFIX}job-return:x",
                                                       account_id=acct, amount=5, source=pb.LOT_SOURCE_BONUS))
    assert error_of(exc.value) == (grpc.StatusCode.INVALID_ARGUMENT, "RESERVED_REQUEST_ID")
    balance = await stubs["billing"].GetBalance(pb.GetBalanceRequest(account_id=acct))
    assert (balance.available, len(balance.lots)) == (0, 0)
