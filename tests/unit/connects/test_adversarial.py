"""Adversarial tests of the Connects ledger (service layer with fakes, and the SQL adapter on SQLite).

Tests marked xfail(strict=True) reproduce a bug: they fail now and will flag
(XPASS -> failure) once the bug is fixed, so the marker can be removed.
"""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import UTC, datetime, timedelta

import pytest
from adsmon.marketplace.v1 import jobs_pb2

from services.connects.adapters.repository import SqlAlchemyLedgerQueries, SqlAlchemyLedgerUnitOfWork
from services.connects.adapters.tables import MIGRATIONS
from services.connects.domain import commands as c
from services.connects.domain.model import (
    MAX_CONNECTS,
    HoldStatus,
    LotSource,
    ReturnReason,
    SpendReason,
    TransactionKind,
)
from services.connects.entrypoints import jobs_consumer
from services.connects.service_layer import handlers, queries
from services.connects.service_layer.batcher import Batcher
from services.connects.service_layer.handlers import Envelope
from services.connects.service_layer.ledger import Ledger
from services.kit.db import make_engine, migrate
from services.kit.errors import InvalidArgument
from services.kit.kafka import make_event
from tests.conftest import unique
from tests.unit.connects.fakes import FakeLedgerStore

NOW = datetime(2026, 3, 1, tzinfo=UTC)
YEAR = timedelta(days=365)


def run(store, *cmds, caller="tests", now=NOW):
    return handlers.execute(store.uow(), [Envelope(cmd, caller) for cmd in cmds], now)


def ok(outcome):
    assert outcome.error is None, outcome.error
    return outcome.receipt


def credit(account, amount=10, source=LotSource.PLAN_GRANT, rid=None):
    return c.Credit(rid or unique("r"), account, amount, source)


def token(body: object) -> str:
    raw = body if isinstance(body, str) else json.dumps(body)
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


@pytest.fixture
def sqlite_engine(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path}/connects.db", pool_size=2)
    migrate(engine, "connects", MIGRATIONS)
    yield engine
    engine.dispose()


def sql_run(engine, *cmds, caller="tests", now=NOW):
    return handlers.execute(SqlAlchemyLedgerUnitOfWork(engine), [Envelope(cmd, caller) for cmd in cmds], now)


# ----- bugs ------------------------------------------------------------------------------------------------------


@pytest.mark.xfail(strict=True, raises=RecursionError,
                   reason="BUG: a page_token of deeply nested JSON raises RecursionError (INTERNAL), "
                          "not INVALID_PAGE_TOKEN")
def test_a_tampered_page_token_of_deeply_nested_json_is_invalid_argument():
    store = FakeLedgerStore()
    with pytest.raises(InvalidArgument) as exc:
        queries.list_transactions(store, "a", 10, token("[" * 100_000 + "]" * 100_000))
    assert exc.value.reason == "INVALID_PAGE_TOKEN"


@pytest.mark.xfail(strict=True, raises=OverflowError,
                   reason="BUG: a page_token whose sequence is >= 2^63 reaches the database (OverflowError on "
                          "SQLite -> INTERNAL) instead of INVALID_PAGE_TOKEN")
@pytest.mark.parametrize("sequence", [2**63, 10**30])
def test_a_page_token_with_a_sequence_past_int64_is_invalid_argument(sqlite_engine, sequence):
    acct = unique("a")
    ok(sql_run(sqlite_engine, credit(acct, 5))[0])
    with pytest.raises(InvalidArgument) as exc:
        queries.list_transactions(SqlAlchemyLedgerQueries(sqlite_engine), acct, 10,
                                  token({"a": acct, "s": sequence}))
    assert exc.value.reason == "INVALID_PAGE_TOKEN"


@pytest.mark.xfail(strict=True, reason="BUG: GetBalance lists a lot past its date (held by an open hold) with its "
                                       "unexpired remaining, though those Connects are not available")
def test_balance_lots_never_show_connects_past_their_date_as_remaining():
    store, acct = FakeLedgerStore(), unique("a")
    ok(run(store, credit(acct, 10), now=NOW)[0])
    # A 90-day hold placed a month before the lot's date outlives the lot.
    ok(run(store, c.PlaceHold(unique("r"), acct, 4, SpendReason.PROPOSAL, ttl=timedelta(days=90)),
           now=NOW + YEAR - timedelta(days=30))[0])
    later = NOW + YEAR + timedelta(days=1)  # the lot is due; the sweeper has not run yet
    balance = queries.get_balance(store, acct, later)
    assert (balance.available, balance.held) == (0, 4)
    # Lot.remaining is documented as "Connects still available in this lot".
    assert sum(lot.remaining for lot in balance.lots) == balance.available


@pytest.mark.xfail(strict=True, reason="BUG: a CaptureHold replay skips authorisation: a non-ads caller gets the "
                                       "stored answer of an ads BOOST capture instead of CALLER_NOT_ALLOWED")
def test_replaying_an_ads_capture_as_another_caller_is_refused():
    store, acct = FakeLedgerStore(), unique("a")
    ok(run(store, credit(acct, 10))[0])
    hold_id = ok(run(store, c.PlaceHold(unique("r"), acct, 4, SpendReason.BOOST), caller="ads")[0]).hold_id
    capture = c.CaptureHold(unique("r"), hold_id, 4)
    ok(run(store, capture, caller="ads")[0])
    (replay,) = run(store, capture, caller="marketplace")
    assert replay.error is not None and replay.error.reason == "CALLER_NOT_ALLOWED"


@pytest.mark.xfail(strict=True, reason="BUG: SUM(postings.amount) overflows on SQLite (integer overflow) once a "
                                       "system account passes 2^63-1, so system_balances() raises")
def test_system_balances_survive_two_maximal_credits_on_sqlite(sqlite_engine):
    for acct in (unique("a"), unique("b")):
        ok(sql_run(sqlite_engine, credit(acct, MAX_CONNECTS, LotSource.BONUS))[0])
    balances = SqlAlchemyLedgerQueries(sqlite_engine).system_balances()
    assert balances["system:issuance"] == -2 * MAX_CONNECTS
    assert balances["wallets"] == 2 * MAX_CONNECTS


@pytest.mark.xfail(strict=True, reason="BUG: the jobs consumer's derived request_id 'job-return:<tx>' shares the "
                                       "client namespace; a client command that used it blocks the return forever")
def test_a_client_request_id_cannot_block_the_automatic_return_of_a_cancelled_job(sqlite_engine):
    acct, job = unique("a"), unique("job")
    ok(sql_run(sqlite_engine, credit(acct, 10))[0])
    spend = ok(sql_run(sqlite_engine, c.Spend(unique("r"), acct, 4, SpendReason.PROPOSAL, f"job:{job}"))[0])
    tx_id = spend.transaction.transaction_id
    # Any client may pick any request_id, including the one the consumer will derive.
    ok(sql_run(sqlite_engine, c.Credit(jobs_consumer.return_request_id(tx_id), unique("other"), 1,
                                       LotSource.BONUS))[0])
    handle = jobs_consumer.make_handler(lambda: NOW, handlers.NullMetrics())
    event = make_event(jobs_pb2.JobCancelled(job_id=job), job, "marketplace")
    with sqlite_engine.begin() as conn:
        handle(conn, event, None)
    balance = queries.get_balance(SqlAlchemyLedgerQueries(sqlite_engine), acct, NOW)
    assert balance.available == 10, "the cancelled job's proposal spend was returned"


# ----- risky areas that hold ------------------------------------------------------------------------------------


def test_crediting_2_63_minus_1_twice_is_refused_and_holds_count_toward_the_limit():
    store, acct = FakeLedgerStore(), unique("a")
    ok(run(store, credit(acct, MAX_CONNECTS))[0])
    (again,) = run(store, credit(acct, 1))
    assert again.error.reason == "BALANCE_LIMIT_EXCEEDED"
    ok(run(store, c.PlaceHold(unique("r"), acct, MAX_CONNECTS, SpendReason.PROPOSAL))[0])
    (over,) = run(store, credit(acct, 1))
    assert over.error.reason == "BALANCE_LIMIT_EXCEEDED"
    w = store.wallets[acct]
    assert (w.available, w.held) == (0, MAX_CONNECTS)


def test_a_return_that_would_pass_the_limit_is_refused_and_can_be_retried_later():
    store, acct = FakeLedgerStore(), unique("a")
    ok(run(store, credit(acct, MAX_CONNECTS))[0])
    spend = ok(run(store, c.Spend(unique("r"), acct, 5, SpendReason.PROPOSAL, "job:j"))[0]).transaction
    ok(run(store, credit(acct, 5))[0])
    ret = c.ReturnConnects(unique("r"), spend.transaction_id, ReturnReason.JOB_REMOVED_TOS)
    assert run(store, ret)[0].error.reason == "BALANCE_LIMIT_EXCEEDED"
    ok(run(store, c.Spend(unique("r"), acct, 5, SpendReason.PROPOSAL))[0])
    ok(run(store, ret)[0])
    assert store.wallets[acct].available == MAX_CONNECTS


def test_request_id_reused_for_another_account_or_method_with_identical_fields_is_refused():
    store, a, b = FakeLedgerStore(), unique("a"), unique("b")
    rid = unique("r")
    ok(run(store, c.Credit(rid, a, 5, LotSource.BONUS))[0])
    (other_account,) = run(store, c.Credit(rid, b, 5, LotSource.BONUS))
    (other_source,) = run(store, c.Credit(rid, a, 5, LotSource.PLAN_GRANT))
    (other_method,) = run(store, c.Spend(rid, a, 5, SpendReason.PROPOSAL))
    assert {o.error.reason for o in (other_account, other_source, other_method)} == {"REQUEST_ID_REUSED"}
    assert b not in store.wallets or store.wallets[b].available == 0
    assert store.wallets[a].available == 5


def test_a_batch_with_refusals_between_commands_on_one_account_commits_the_rest_and_stores_only_successes():
    store, acct = FakeLedgerStore(), unique("a")
    ok(run(store, credit(acct, 10))[0])
    cmds = [c.Spend(unique("r"), acct, 6, SpendReason.PROPOSAL),
            c.Spend(unique("r"), acct, 6, SpendReason.PROPOSAL),  # refused: 4 left
            c.PlaceHold(unique("r"), acct, 4, SpendReason.PROPOSAL),
            c.CaptureHold(unique("r"), "no-such-hold", 1)]
    before = set(store.requests)
    outs = run(store, *cmds)
    assert [o.error.reason if o.error else "OK" for o in outs] == ["OK", "INSUFFICIENT_CONNECTS", "OK",
                                                                  "HOLD_NOT_FOUND"]
    assert set(store.requests) - before == {cmds[0].request_id, cmds[2].request_id}
    w = store.wallets[acct]
    assert (w.available, w.held) == (0, 4)


def test_capture_at_the_exact_ttl_is_refused_and_just_before_is_allowed():
    store, acct = FakeLedgerStore(), unique("a")
    ok(run(store, credit(acct, 10))[0])
    ttl = timedelta(seconds=30)
    h1 = ok(run(store, c.PlaceHold(unique("r"), acct, 3, SpendReason.PROPOSAL, ttl=ttl))[0]).hold_id
    h2 = ok(run(store, c.PlaceHold(unique("r"), acct, 3, SpendReason.PROPOSAL, ttl=ttl))[0]).hold_id
    (late,) = run(store, c.CaptureHold(unique("r"), h1, 3), now=NOW + ttl)
    assert late.error.reason == "HOLD_EXPIRED"
    ok(run(store, c.CaptureHold(unique("r"), h2, 3), now=NOW + ttl - timedelta(microseconds=1))[0])
    w = store.wallets[acct]
    assert w.holds[h1].status is HoldStatus.EXPIRED and (w.available, w.held) == (7, 0)
    assert store.due_holds(NOW + ttl, 10) == []


def test_only_a_captures_captured_part_is_returned_and_holds_or_releases_are_not_returnable():
    store, acct = FakeLedgerStore(), unique("a")
    ok(run(store, credit(acct, 10), now=NOW - timedelta(days=100))[0])
    ok(run(store, credit(acct, 10))[0])
    held = ok(run(store, c.PlaceHold(unique("r"), acct, 15, SpendReason.BOOST, "job:j"), caller="ads")[0])
    cap = ok(run(store, c.CaptureHold(unique("r"), held.hold_id, 12), caller="ads")[0]).transaction
    outs = run(store, c.ReturnConnects(unique("r"), held.transaction.transaction_id, ReturnReason.JOB_REMOVED_TOS),
               c.ReturnConnects(unique("r"), cap.transaction_id, ReturnReason.JOB_REMOVED_TOS),
               c.ReturnConnects(unique("r"), cap.transaction_id, ReturnReason.JOB_CANCELLED_BEFORE_CONTRACT))
    assert [o.error.reason if o.error else "OK" for o in outs] == ["TRANSACTION_NOT_RETURNABLE", "OK",
                                                                  "ALREADY_RETURNED"]
    ret = outs[1].receipt.transaction
    assert ret.amount == 12
    assert sorted((m.amount, m.expires_at) for m in ret.movements) == sorted(
        (m.amount, m.expires_at) for m in cap.movements)
    assert store.wallets[acct].available == 20


def test_a_crash_after_save_before_commit_in_a_batch_is_retried_and_every_caller_gets_a_valid_answer():
    store, acct = FakeLedgerStore(), unique("a")
    calls = {"n": 0}

    def flaky_uow():
        uow = store.uow()
        calls["n"] += 1
        if calls["n"] == 2:
            uow.fail_on_save = RuntimeError("server closed the connection unexpectedly")
        return uow

    async def scenario():
        batcher = Batcher(flaky_uow, lambda: NOW, handlers.NullMetrics(), max_batch=64)
        ledger = Ledger(batcher, store, lambda fn, *a: asyncio.to_thread(fn, *a), lambda: NOW)
        batcher.start()
        try:
            await ledger.mutate(credit(acct, 20), "tests")
            return await asyncio.gather(*(ledger.execute(c.PlaceHold(unique("r"), acct, 3, SpendReason.PROPOSAL),
                                                         "tests") for _ in range(8)))
        finally:
            batcher.stop()

    outs = asyncio.run(scenario())
    assert sorted(o.error.reason if o.error else "OK" for o in outs) == ["INSUFFICIENT_CONNECTS"] * 2 + ["OK"] * 6
    w = store.wallets[acct]
    hold_ids = {o.receipt.hold_id for o in outs if o.receipt}
    assert hold_ids == {h for h, hold in w.holds.items() if hold.status is HoldStatus.OPEN}
    assert (w.available, w.held) == (2, 18)


def test_balance_of_an_unknown_account_is_zero_and_page_of_an_unknown_account_is_empty():
    store = FakeLedgerStore()
    b = queries.get_balance(store, unique("nobody"), NOW)
    assert (b.available, b.held, b.lots, b.expiring_within_30_days) == (0, 0, [], 0)
    page = queries.list_transactions(store, unique("nobody"), 10, "")
    assert (page.transactions, page.next_page_token) == ([], "")


@pytest.mark.parametrize("body", ["", "null", '"x"', "[]", "{}", '{"a": "A", "s": 0}', '{"a": "A", "s": -1}',
                                  '{"a": "A", "s": 1.5}', '{"a": "A", "s": true}', '{"a": "A", "s": "5"}',
                                  '{"a": "B", "s": 5}', '{"a": "A", "s": 1e999}', '{"s": 5}', "\xff\xfe"])
def test_tampered_page_tokens_are_invalid_argument(body):
    raw = base64.urlsafe_b64encode(body.encode("latin-1")).decode().rstrip("=") if body else "%%%"
    with pytest.raises(InvalidArgument) as exc:
        queries.list_transactions(FakeLedgerStore(), "A", 10, raw)
    assert exc.value.reason == "INVALID_PAGE_TOKEN"


def test_expiring_within_30_days_counts_due_window_only_and_balance_equals_lots(sqlite_engine):
    acct = unique("a")
    ok(sql_run(sqlite_engine, credit(acct, 7), now=NOW - YEAR + timedelta(days=10))[0])  # expires in 10 days
    ok(sql_run(sqlite_engine, credit(acct, 5), now=NOW - YEAR + timedelta(days=30))[0])  # exactly at +30 days
    ok(sql_run(sqlite_engine, credit(acct, 3), now=NOW - YEAR + timedelta(days=31))[0])  # in 31 days
    ok(sql_run(sqlite_engine, credit(acct, 2), now=NOW - YEAR)[0])  # due right now
    ok(sql_run(sqlite_engine, c.PlaceHold(unique("r"), acct, 4, SpendReason.PROPOSAL))[0])  # from the 7-lot
    b = queries.get_balance(SqlAlchemyLedgerQueries(sqlite_engine), acct, NOW)
    assert b.expiring_within_30_days == 3 + 5
    assert (b.available, b.held) == (3 + 5 + 3, 4)
    assert sum(lot.remaining for lot in b.lots) == b.available
    assert sum(lot.held for lot in b.lots) == b.held


def test_transactions_on_sqlite_sum_to_zero_and_the_wallet_matches_its_lots(sqlite_engine):
    acct = unique("a")
    ok(sql_run(sqlite_engine, credit(acct, 10, LotSource.BONUS), now=NOW - YEAR + timedelta(days=1))[0])
    ok(sql_run(sqlite_engine, credit(acct, 10))[0])
    hold = ok(sql_run(sqlite_engine, c.PlaceHold(unique("r"), acct, 12, SpendReason.BOOST, "job:j",
                                                 ttl=timedelta(days=5)), caller="ads")[0])
    spend = ok(sql_run(sqlite_engine, c.Spend(unique("r"), acct, 8, SpendReason.PROPOSAL, "job:j"))[0])
    later = NOW + timedelta(days=2)  # the BONUS lot is past its date, part of it held
    ok(sql_run(sqlite_engine, c.ExpireLots(acct), caller="connects", now=later)[0])
    cap = ok(sql_run(sqlite_engine, c.CaptureHold(unique("r"), hold.hold_id, 5), caller="ads", now=later)[0])
    ok(sql_run(sqlite_engine, c.ReturnConnects(unique("r"), spend.transaction.transaction_id,
                                               ReturnReason.JOB_CANCELLED_BEFORE_CONTRACT), now=later)[0])
    ok(sql_run(sqlite_engine, c.ReturnConnects(unique("r"), cap.transaction.transaction_id,
                                               ReturnReason.JOB_REMOVED_TOS), now=later)[0])
    qs = SqlAlchemyLedgerQueries(sqlite_engine)
    txs = qs.transactions(acct, None, 100)
    assert all(sum(p.amount for p in t.postings) == 0 for t in txs)
    wallet_sum = sum(p.amount for t in txs for p in t.postings if p.ledger_account == f"wallet:{acct}")
    b = queries.get_balance(qs, acct, later)
    assert wallet_sum == b.available == sum(lot.remaining for lot in b.lots)
    assert b.held == 0
    assert sum(qs.system_balances().values()) == 0
    kinds = [t.kind for t in reversed(txs)]
    assert kinds.count(TransactionKind.EXPIRE) >= 1
