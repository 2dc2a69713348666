"""The ledger on real PostgreSQL (service layer + SQL adapter): concurrency and lock order, idempotency,
lots and returns read back, sweeps racing commands, history pages, the outbox."""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
import sqlalchemy as sa

from services.connects.adapters.repository import SqlAlchemyLedgerUnitOfWork
from services.connects.domain import commands as c
from services.connects.domain.model import (
    MAX_CONNECTS,
    HoldStatus,
    LotSource,
    ReturnReason,
    SpendReason,
    TransactionKind,
)
from services.connects.service_layer import handlers
from services.connects.service_layer import queries as q
from services.connects.service_layer.handlers import Envelope
from services.connects.service_layer.unit_of_work import RequestIdConflict, StoredRequest
from services.kit.errors import InvalidArgument
from services.kit.server import running
from tests.conftest import unique
from tests.integration.connects.conftest import assert_books_balance, execute_one, fund, now, ok
from tests.support.connects import connects_app

pytestmark = pytest.mark.integration


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
            apps[i % 4].ledger.execute(c.Spend(unique("r"), acct, 1, SpendReason.PROPOSAL), "operator")
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
    (winner,) = [i for i, o in enumerate(outs) if o.error is None]
    assert {o.error.reason for o in outs if o.error} == {"HOLD_NOT_OPEN"}
    with engine.connect() as conn:
        kinds = conn.execute(sa.text("SELECT kind FROM ledger_transactions WHERE hold_id = :h"),
                             {"h": hold_id}).scalars().all()
    assert sorted(kinds) == sorted(["HOLD", "CAPTURE" if winner % 2 else "RELEASE"]), "the winner's entry only"
    assert_books_balance(engine)


def test_a_request_id_stored_by_another_transaction_meanwhile_fails_the_commit_and_writes_nothing(
        uow_factory, engine):
    # The batch read no stored request (another process committed it after that read): its write statement and
    # COMMIT travel together, so the duplicate must abort both and leave no trace of the batch.
    acct = unique("acct")
    fund(uow_factory, acct, 100)
    spend = c.Spend(unique("r"), acct, 7, SpendReason.PROPOSAL)
    assert ok(execute_one(uow_factory, spend))
    uow = SqlAlchemyLedgerUnitOfWork(engine)
    with pytest.raises(RequestIdConflict), uow:
        wallet = uow.lock_wallets([acct], [])[acct]
        wallet.spend(amount=5, reason=SpendReason.PROPOSAL, reference="", now=now())
        uow.save([wallet], [StoredRequest(spend.request_id, spend.method, spend.fingerprint(), b"{}")], now())
        uow.commit()
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT available FROM wallets WHERE account_id = :a"),
                            {"a": acct}).scalar_one() == 93
        assert conn.execute(sa.text("SELECT count(*) FROM ledger_transactions WHERE account_id = :a"),
                            {"a": acct}).scalar_one() == 2
    assert ok(execute_one(uow_factory, spend))  # the retry answers from the stored request
    assert_books_balance(engine)


def test_a_batch_locked_with_its_first_read_answers_replays_new_wallets_and_accounts_without_one(
        uow_factory, engine):
    # Credits and spends only: their wallets are locked and loaded with the request lookup (expect_wallets).
    a, b, none = unique("acct"), unique("acct"), unique("acct")
    fund(uow_factory, a, 100)
    first = c.Spend(unique("r"), a, 10, SpendReason.PROPOSAL)
    assert ok(execute_one(uow_factory, first))
    batch = [first, c.Spend(unique("r"), a, 5, SpendReason.PROPOSAL),
             c.Credit(unique("r"), b, 20, LotSource.PLAN_GRANT),
             c.Spend(unique("r"), b, 3, SpendReason.PROPOSAL), c.Spend(unique("r"), none, 1, SpendReason.PROPOSAL)]
    outs = handlers.execute(uow_factory(), [Envelope(cmd, "operator") for cmd in batch], now())
    assert [o.replayed for o in outs] == [True, False, False, False, False]
    assert [o.receipt.transaction.available_after for o in outs[:4]] == [90, 85, 20, 17]
    assert outs[4].error is not None and outs[4].error.reason == "INSUFFICIENT_CONNECTS"
    with engine.connect() as conn:
        rows = dict(conn.execute(sa.text("SELECT account_id, available FROM wallets WHERE account_id IN (:a, :b, :n)"),
                                 {"a": a, "b": b, "n": none}).all())
    assert rows == {a: 85, b: 17}
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
        outs = await asyncio.gather(*(apps[i % 4].ledger.execute(credit, "operator") for i in range(32)))
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


def test_lots_inserted_out_of_expiry_order_are_spent_oldest_expiry_first(uow_factory, queries):
    acct, t0 = unique("acct"), now() - timedelta(days=30)
    for age_days, amount in ((5, 4), (0, 3), (9, 2), (2, 5)):  # inserted in no order of expiry
        fund(uow_factory, acct, amount, at=t0 + timedelta(days=age_days))
    out = ok(execute_one(uow_factory, c.Spend(unique("r"), acct, 12, SpendReason.PROPOSAL)))
    assert [(m.amount, m.expires_at) for m in out.transaction.movements] == [
        (3, t0 + timedelta(days=365)), (5, t0 + timedelta(days=367)), (4, t0 + timedelta(days=370))]
    lots = sorted((lot.expires_at, lot.remaining) for lot in q.get_balance(queries, acct, now()).lots)
    assert lots == [(t0 + timedelta(days=374), 2)], "only the newest lot is left, untouched"


def test_a_returned_spend_read_back_from_postgres_keeps_the_original_expiry(uow_factory, queries, engine):
    acct, t0 = unique("acct"), now() - timedelta(days=200)
    fund(uow_factory, acct, 3, at=t0)
    fund(uow_factory, acct, 10, at=t0 + timedelta(days=100))
    spend = ok(execute_one(uow_factory, c.Spend(unique("r"), acct, 5, SpendReason.PROPOSAL, "job:j")))
    ok(execute_one(uow_factory, c.ReturnConnects(unique("r"), spend.transaction.transaction_id,
                                                 ReturnReason.JOB_CANCELLED_BEFORE_CONTRACT)))
    returned = sorted((lot.expires_at, lot.amount) for lot in queries.lots(acct) if lot.source is LotSource.RETURN)
    assert returned == [(t0 + timedelta(days=365), 3), (t0 + timedelta(days=465), 2)]
    # Read back, they are spent in expiry order among the others: the first return lot before the 8 left.
    nxt = ok(execute_one(uow_factory, c.Spend(unique("r"), acct, 4, SpendReason.PROPOSAL)))
    assert [(m.source, m.amount, m.expires_at) for m in nxt.transaction.movements] == [
        (LotSource.RETURN, 3, t0 + timedelta(days=365)), (LotSource.PLAN_GRANT, 1, t0 + timedelta(days=465))]
    assert_books_balance(engine)


def test_concurrent_batches_over_overlapping_accounts_in_different_orders_never_deadlock(uow_factory, engine,
                                                                                        queries):
    """Each batch is one transaction locking several wallets; the adapter locks them in account order, so
    batches naming the same accounts in opposite orders wait for each other instead of deadlocking."""
    accounts = [unique("acct") for _ in range(6)]
    for a in accounts:
        fund(uow_factory, a, 1000)
    rng = random.Random(6)
    batches = [rng.sample(accounts, 4) for _ in range(64)]

    def apply(order: list[str]):
        cmds = [c.Spend(unique("r"), a, 1, SpendReason.PROPOSAL) for a in order]
        cmds += [c.Credit(unique("r"), a, 2, LotSource.BONUS) for a in reversed(order)]
        return handlers.execute(uow_factory(), [Envelope(cmd, "operator") for cmd in cmds], now())

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(apply, batches))  # a deadlock would raise out of execute
    assert all(o.error is None for outs in results for o in outs)
    touched = Counter(a for order in batches for a in order)
    for a in accounts:
        assert q.get_balance(queries, a, now()).available == 1000 + touched[a]
    assert_books_balance(engine)


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
        Envelope(c.Spend(unique("r"), acct, 3, SpendReason.PROPOSAL), "operator"),
        Envelope(c.Spend(unique("r"), acct, 3, SpendReason.PROPOSAL), "operator"),
        Envelope(c.Credit(unique("r"), acct, 1, LotSource.BONUS), "operator")], now())
    assert [o.error.reason if o.error else "OK" for o in outs] == ["OK", "INSUFFICIENT_CONNECTS", "OK"]
    assert_books_balance(engine)


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
    sweeps, captures = outs[0::2], outs[1::2]
    assert all(o.error is None for o in sweeps), "a sweep of a resolved hold is a no-op"
    # The first capture to reach the open hold expires it (HOLD_EXPIRED) unless a sweep got there first; every
    # other capture finds it expired (HOLD_NOT_OPEN, status EXPIRED). None captures.
    reasons = [(o.error.reason, o.error.metadata.get("status")) for o in captures]
    assert reasons.count(("HOLD_EXPIRED", None)) <= 1
    assert [r for r in reasons if r != ("HOLD_EXPIRED", None)] == [("HOLD_NOT_OPEN", "EXPIRED")] * (
        4 - reasons.count(("HOLD_EXPIRED", None)))
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


def test_a_well_formed_page_token_with_a_sequence_past_int64_is_invalid_argument_on_postgres(uow_factory, queries):
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
    outs = handlers.execute(uow_factory(), [Envelope(cmd, "operator") for cmd in batch], now())
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
