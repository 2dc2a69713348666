"""The ledger on real PostgreSQL: concurrency, idempotency, returns, sweeps, outbox."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
import sqlalchemy as sa

from services.connects.adapters.repository import SqlAlchemyLedgerUnitOfWork
from services.connects.domain import commands as c
from services.connects.domain.model import HoldStatus, LotSource, ReturnReason, SpendReason, TransactionKind
from services.connects.service_layer import handlers
from services.connects.service_layer import queries as q
from services.connects.service_layer.handlers import Envelope
from services.kit.server import running
from tests.conftest import unique
from tests.integration.connects.conftest import assert_books_balance, execute_one, now
from tests.support.connects import connects_app

pytestmark = pytest.mark.integration


def fund(uow_factory, account, amount, at=None):
    out = execute_one(uow_factory, c.Credit(unique("r"), account, amount, LotSource.PLAN_GRANT), at=at)
    assert out.error is None
    return out


def test_64_concurrent_spends_on_one_wallet_that_affords_n_exactly_n_succeed(uow_factory, queries, engine):
    acct, n = unique("acct"), 23
    fund(uow_factory, acct, 3 * n)
    barrier = threading.Barrier(64)

    def spend(_):
        barrier.wait()
        return execute_one(uow_factory, c.Spend(unique("r"), acct, 3, SpendReason.PROPOSAL))

    with ThreadPoolExecutor(64) as pool:
        outs = list(pool.map(spend, range(64)))
    results = Counter(o.error.reason if o.error else "OK" for o in outs)
    assert results == {"OK": n, "INSUFFICIENT_CONNECTS": 64 - n}
    assert q.get_balance(queries, acct, now()).available == 0
    assert_books_balance(engine)


async def test_64_concurrent_spends_through_several_batchers_exactly_n_succeed(uow_factory, queries, engine):
    acct, n = unique("acct"), 40
    fund(uow_factory, acct, n)
    apps = [connects_app(uow_factory, queries, BATCH_WORKERS="2") for _ in range(4)]  # as four processes
    async with contextlib.AsyncExitStack() as stack:
        for app in apps:
            await stack.enter_async_context(running(app))
        outs = await asyncio.gather(*(
            apps[i % 4].ledger.execute(c.Spend(unique("r"), acct, 1, SpendReason.PROPOSAL), "tests")
            for i in range(64)))
    assert Counter(o.error.reason if o.error else "OK" for o in outs) == {"OK": n, "INSUFFICIENT_CONNECTS": 24}
    assert_books_balance(engine)


@pytest.mark.parametrize("round_", range(3))
def test_concurrent_capture_and_release_of_one_hold_exactly_one_wins(uow_factory, engine, round_):
    acct = unique("acct")
    fund(uow_factory, acct, 10)
    held = execute_one(uow_factory, c.PlaceHold(unique("r"), acct, 6, SpendReason.BOOST), caller="ads")
    hold_id = held.receipt.hold_id
    barrier = threading.Barrier(8)

    def act(i):
        barrier.wait()
        cmd = c.CaptureHold(unique("r"), hold_id, 6) if i % 2 else c.ReleaseHold(unique("r"), hold_id)
        return execute_one(uow_factory, cmd, caller="ads")

    with ThreadPoolExecutor(8) as pool:
        outs = list(pool.map(act, range(8)))
    assert sum(o.error is None for o in outs) == 1
    assert {o.error.reason for o in outs if o.error} == {"HOLD_NOT_OPEN"}
    with engine.connect() as conn:
        kinds = conn.execute(sa.text("SELECT kind FROM ledger_transactions WHERE hold_id = :h"),
                             {"h": hold_id}).scalars().all()
    assert sorted(kinds) in (["CAPTURE", "HOLD"], ["HOLD", "RELEASE"])
    assert_books_balance(engine)


def test_the_same_request_id_sent_concurrently_is_applied_once(uow_factory, engine):
    acct = unique("acct")
    fund(uow_factory, acct, 100)
    spend = c.Spend(unique("r"), acct, 7, SpendReason.PROPOSAL)
    barrier = threading.Barrier(16)

    def send(_):
        barrier.wait()
        return execute_one(uow_factory, spend)

    with ThreadPoolExecutor(16) as pool:
        outs = list(pool.map(send, range(16)))
    assert len({o.receipt.transaction.transaction_id for o in outs}) == 1
    assert sum(not o.replayed for o in outs) == 1
    with engine.connect() as conn:
        available = conn.execute(sa.text("SELECT available FROM wallets WHERE account_id = :a"),
                                 {"a": acct}).scalar_one()
    assert available == 93
    assert_books_balance(engine)


async def test_the_same_request_id_through_several_batchers_is_applied_once(uow_factory, queries, engine):
    acct = unique("acct")
    fund(uow_factory, acct, 100)
    credit = c.Credit(unique("r"), acct, 5, LotSource.BONUS)
    apps = [connects_app(uow_factory, queries) for _ in range(4)]
    async with contextlib.AsyncExitStack() as stack:
        for app in apps:
            await stack.enter_async_context(running(app))
        outs = await asyncio.gather(*(apps[i % 4].ledger.execute(credit, "tests") for i in range(32)))
    assert len({o.receipt.transaction.transaction_id for o in outs}) == 1
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT available FROM wallets WHERE account_id = :a"),
                            {"a": acct}).scalar_one() == 105


def test_a_reused_request_id_with_another_request_is_refused(uow_factory):
    acct, rid = unique("acct"), unique("r")
    fund(uow_factory, acct, 10)
    assert execute_one(uow_factory, c.Spend(rid, acct, 1, SpendReason.PROPOSAL)).error is None
    out = execute_one(uow_factory, c.Spend(rid, acct, 2, SpendReason.PROPOSAL))
    assert (out.error.code, out.error.reason) == ("ALREADY_EXISTS", "REQUEST_ID_REUSED")


def test_concurrent_returns_of_one_spend_return_it_once(uow_factory, engine):
    acct = unique("acct")
    fund(uow_factory, acct, 10)
    spent = execute_one(uow_factory, c.Spend(unique("r"), acct, 4, SpendReason.PROPOSAL, "job:j1"))
    tx_id = spent.receipt.transaction.transaction_id
    with ThreadPoolExecutor(8) as pool:
        outs = list(pool.map(lambda _: execute_one(
            uow_factory, c.ReturnConnects(unique("r"), tx_id, ReturnReason.JOB_REMOVED_TOS)), range(8)))
    assert sum(o.error is None for o in outs) == 1
    assert {o.error.reason for o in outs if o.error} == {"ALREADY_RETURNED"}
    assert_books_balance(engine)


def test_lots_are_spent_oldest_first_and_the_spend_records_them(uow_factory, queries):
    acct, t0 = unique("acct"), now() - timedelta(days=10)
    fund(uow_factory, acct, 3, at=t0)
    fund(uow_factory, acct, 10, at=t0 + timedelta(days=1))
    out = execute_one(uow_factory, c.Spend(unique("r"), acct, 5, SpendReason.PROPOSAL))
    assert [m.amount for m in out.receipt.transaction.movements] == [3, 2]
    page = queries.transactions(acct, None, 10)
    assert [t.kind for t in page] == [TransactionKind.SPEND, TransactionKind.CREDIT, TransactionKind.CREDIT]
    assert [m.amount for m in page[0].movements] == [3, 2]


def test_expiry_sweeps_twice_and_concurrently_expire_each_lot_once(uow_factory, queries, engine):
    accounts = [unique("acct") for _ in range(5)]
    old = now() - timedelta(days=366)
    for a in accounts:
        fund(uow_factory, a, 7, at=old)
    due = [a for a in queries.due_lot_accounts(now(), 10_000) if a in accounts]
    assert sorted(due) == sorted(accounts)

    def sweep(_):
        return [execute_one(uow_factory, c.ExpireLots(a), caller="connects") for a in accounts]

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(sweep, range(4)))
    with engine.connect() as conn:
        expired = conn.execute(sa.text(
            "SELECT account_id, count(*), sum(amount) FROM ledger_transactions WHERE kind = 'EXPIRE' "
            "AND account_id = ANY(:a) GROUP BY account_id"), {"a": accounts}).all()
    assert sorted((a, n, s) for a, n, s in expired) == sorted((a, 1, 7) for a in accounts)
    assert_books_balance(engine)


def test_an_expired_hold_is_released_by_the_sweeper_and_refused_for_capture(uow_factory, queries):
    acct = unique("acct")
    fund(uow_factory, acct, 10)
    held = execute_one(uow_factory, c.PlaceHold(unique("r"), acct, 4, SpendReason.PROPOSAL,
                                                ttl=timedelta(seconds=1)))
    later = now() + timedelta(seconds=5)
    assert held.receipt.hold_id in queries.due_holds(later, 10_000)
    for _ in range(2):
        execute_one(uow_factory, c.ExpireHold(held.receipt.hold_id), caller="connects", at=later)
    out = execute_one(uow_factory, c.CaptureHold(unique("r"), held.receipt.hold_id, 4), at=later)
    assert out.error.reason == "HOLD_NOT_OPEN" and out.error.metadata["status"] == HoldStatus.EXPIRED.value
    assert q.get_balance(queries, acct, now()).available == 10


def test_every_ledger_transaction_is_in_the_outbox_in_the_same_commit(uow_factory, engine):
    acct = unique("acct")
    out = fund(uow_factory, acct, 10)
    tx_id = out.receipt.transaction.transaction_id
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT topic, key FROM outbox WHERE event_id = :e"),
                            {"e": f"connects-tx-{tx_id}"}).all()
    assert rows == [("connects.ledger.v1", acct)]


def test_a_batch_refused_command_rolls_back_nothing_of_its_neighbours(uow_factory, engine):
    acct = unique("acct")
    fund(uow_factory, acct, 5)
    outs = handlers.execute(SqlAlchemyLedgerUnitOfWork(engine), [
        Envelope(c.Spend(unique("r"), acct, 3, SpendReason.PROPOSAL), "tests"),
        Envelope(c.Spend(unique("r"), acct, 3, SpendReason.PROPOSAL), "tests"),
        Envelope(c.Credit(unique("r"), acct, 1, LotSource.BONUS), "tests")], now())
    assert [o.error.reason if o.error else "OK" for o in outs] == ["OK", "INSUFFICIENT_CONNECTS", "OK"]
    assert_books_balance(engine)
