"""Adversarial tests of the Connects ledger (service layer with fakes, and the SQL adapter on SQLite).

The first section reproduces bugs an adversarial review found (each was an
xfail(strict=True) test until fixed) and the design gaps it raised; the
second probes risky areas that held.
"""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from adsmon.marketplace.v1 import jobs_pb2

from services.connects.adapters.migrations import MIGRATIONS
from services.connects.adapters.repository import SqlAlchemyLedgerQueries, SqlAlchemyLedgerUnitOfWork
from services.connects.adapters.tables import wallets
from services.connects.bootstrap import jobs_handler
from services.connects.domain import commands as c
from services.connects.domain.model import (
    MAX_CONNECTS,
    HoldStatus,
    LotSource,
    ReturnReason,
    SpendReason,
    TransactionKind,
)
from services.connects.service_layer import handlers, queries, returns
from services.connects.service_layer.handlers import Envelope
from services.kit.db import make_engine
from services.kit.errors import DomainError, InvalidArgument, PermissionDenied
from services.kit.kafka import make_event
from services.kit.migrations import upgrade
from services.kit.server import running
from tests.conftest import unique
from tests.support.connects import connects_app
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
    upgrade(engine, MIGRATIONS)
    yield engine
    engine.dispose()


def sql_run(engine, *cmds, caller="tests", now=NOW):
    return handlers.execute(SqlAlchemyLedgerUnitOfWork(engine), [Envelope(cmd, caller) for cmd in cmds], now)


# ----- bugs ------------------------------------------------------------------------------------------------------


def test_a_tampered_page_token_of_deeply_nested_json_is_invalid_argument():
    store = FakeLedgerStore()
    with pytest.raises(InvalidArgument) as exc:
        queries.list_transactions(store, "a", 10, token("[" * 100_000 + "]" * 100_000))
    assert exc.value.reason == "INVALID_PAGE_TOKEN"


@pytest.mark.parametrize("sequence", [2**63, 10**30])
def test_a_page_token_with_a_sequence_past_int64_is_invalid_argument(sqlite_engine, sequence):
    acct = unique("a")
    ok(sql_run(sqlite_engine, credit(acct, 5))[0])
    with pytest.raises(InvalidArgument) as exc:
        queries.list_transactions(SqlAlchemyLedgerQueries(sqlite_engine), acct, 10,
                                  token({"a": acct, "s": sequence}))
    assert exc.value.reason == "INVALID_PAGE_TOKEN"


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


def test_replaying_an_ads_capture_as_another_caller_is_refused():
    store, acct = FakeLedgerStore(), unique("a")
    ok(run(store, credit(acct, 10))[0])
    hold_id = ok(run(store, c.PlaceHold(unique("r"), acct, 4, SpendReason.BOOST), caller="ads")[0]).hold_id
    capture = c.CaptureHold(unique("r"), hold_id, 4)
    ok(run(store, capture, caller="ads")[0])
    (replay,) = run(store, capture, caller="marketplace")
    assert replay.error is not None and replay.error.reason == "CALLER_NOT_ALLOWED"


def test_system_balances_survive_two_maximal_credits_on_sqlite(sqlite_engine):
    for acct in (unique("a"), unique("b")):
        ok(sql_run(sqlite_engine, credit(acct, MAX_CONNECTS, LotSource.BONUS))[0])
    balances = SqlAlchemyLedgerQueries(sqlite_engine).system_balances()
    assert balances["system:issuance"] == -2 * MAX_CONNECTS
    assert balances["wallets"] == 2 * MAX_CONNECTS


def cancel_job(engine, job):
    handle = jobs_handler(lambda: NOW, handlers.NullMetrics())
    event = make_event(jobs_pb2.JobCancelled(job_id=job), job, "marketplace")
    with engine.begin() as conn:
        handle(conn, event, None)


def test_a_client_request_id_cannot_block_the_automatic_return_of_a_cancelled_job(sqlite_engine):
    acct, job = unique("a"), unique("job")
    ok(sql_run(sqlite_engine, credit(acct, 10))[0])
    spend = ok(sql_run(sqlite_engine, c.Spend(unique("r"), acct, 4, SpendReason.PROPOSAL, f"job:{job}"))[0])
    tx_id = spend.transaction.transaction_id
    # A client can name the id the consumer will derive, but no client command may use the reserved namespace.
    client_id = str(returns.return_request_id(tx_id))
    assert client_id.startswith(c.RESERVED_REQUEST_ID_PREFIX)
    with pytest.raises(InvalidArgument) as exc:
        c.Credit(client_id, unique("other"), 1, LotSource.BONUS)
    assert (exc.value.reason, exc.value.metadata["field"]) == ("RESERVED_REQUEST_ID", "request_id")
    # The old derived id is an ordinary client id now, and taking it blocks nothing.
    ok(sql_run(sqlite_engine, c.Credit(f"job-return:{tx_id}", unique("other"), 1, LotSource.BONUS))[0])
    cancel_job(sqlite_engine, job)
    balance = queries.get_balance(SqlAlchemyLedgerQueries(sqlite_engine), acct, NOW)
    assert balance.available == 10, "the cancelled job's proposal spend was returned"


@pytest.mark.parametrize("request_id", [c.RESERVED_REQUEST_ID_PREFIX, f"{c.RESERVED_REQUEST_ID_PREFIX}job-return:x",
                                        f"{c.RESERVED_REQUEST_ID_PREFIX}anything"])
def test_every_command_refuses_a_client_request_id_in_the_reserved_namespace(request_id):
    builds = [lambda: c.Credit(request_id, "a", 1, LotSource.BONUS),
              lambda: c.Spend(request_id, "a", 1, SpendReason.PROPOSAL),
              lambda: c.PlaceHold(request_id, "a", 1, SpendReason.PROPOSAL),
              lambda: c.CaptureHold(request_id, "h", 1), lambda: c.ReleaseHold(request_id, "h"),
              lambda: c.ReturnConnects(request_id, "t", ReturnReason.JOB_REMOVED_TOS)]
    for build in builds:
        with pytest.raises(InvalidArgument) as exc:
            build()
        assert exc.value.reason == "RESERVED_REQUEST_ID"


def test_the_jobs_consumer_dead_letters_an_event_whose_return_is_refused_unexpectedly(sqlite_engine):
    """If a return is refused for a reason that is not a business answer (here: its internal request id was
    taken, as by data from before the reserved namespace), nothing commits and the error is raised for the
    kit's consumer to dead-letter, instead of the event being marked processed with Connects unreturned."""
    acct, job = unique("a"), unique("job")
    ok(sql_run(sqlite_engine, credit(acct, 10))[0])
    spend = ok(sql_run(sqlite_engine, c.Spend(unique("r"), acct, 4, SpendReason.PROPOSAL, f"job:{job}"))[0])
    tx_id = spend.transaction.transaction_id
    ok(sql_run(sqlite_engine, c.Credit(returns.return_request_id(tx_id), unique("other"), 1,
                                       LotSource.BONUS), caller="connects")[0])
    with pytest.raises(DomainError) as exc:
        cancel_job(sqlite_engine, job)
    assert exc.value.reason == "REQUEST_ID_REUSED"
    qs = SqlAlchemyLedgerQueries(sqlite_engine)
    assert queries.get_balance(qs, acct, NOW).available == 6
    assert [t.transaction_id for t in qs.job_transactions(job)] == [tx_id], "still to be returned"


def test_the_jobs_consumer_skips_a_transaction_returned_meanwhile_and_returns_the_others(sqlite_engine, monkeypatch):
    acct, job = unique("a"), unique("job")
    ok(sql_run(sqlite_engine, credit(acct, 10))[0])
    first = ok(sql_run(sqlite_engine, c.Spend(unique("r"), acct, 2, SpendReason.PROPOSAL, f"job:{job}"))[0])
    ok(sql_run(sqlite_engine, c.Spend(unique("r"), acct, 3, SpendReason.PROPOSAL, f"job:{job}/p2"))[0])
    returned = c.ReturnConnects(unique("r"), first.transaction.transaction_id, ReturnReason.JOB_REMOVED_TOS)
    handle = jobs_handler(lambda: NOW, handlers.NullMetrics())
    event = make_event(jobs_pb2.JobCancelled(job_id=job), job, "marketplace")
    with sqlite_engine.begin() as conn:
        # The RPC return lands after the consumer read the job's transactions, before it returns them.
        txs = SqlAlchemyLedgerQueries(connection=conn).job_transactions(job)
        assert len(txs) == 2
        ok(handlers.execute(SqlAlchemyLedgerUnitOfWork(connection=conn), [Envelope(returned, "marketplace")],
                            NOW)[0])
        monkeypatch.setattr(SqlAlchemyLedgerQueries, "job_transactions", lambda self, job_id: txs)
        handle(conn, event, None)
    assert queries.get_balance(SqlAlchemyLedgerQueries(sqlite_engine), acct, NOW).available == 10


def v1_token(account_id: str, sequence: object) -> str:
    return queries.encode_page_token(account_id, sequence)  # type: ignore[arg-type]


def test_page_tokens_are_short_opaque_strings_and_any_change_is_invalid_argument():
    store, acct = FakeLedgerStore(), unique("a")
    run(store, *(credit(acct, 1) for _ in range(3)))
    page = queries.list_transactions(store, acct, 1, "")
    good = page.next_page_token
    assert good.startswith("v1.") and len(good) <= queries.MAX_PAGE_TOKEN_LEN
    assert [t.sequence for t in queries.list_transactions(store, acct, 5, good).transactions] == [2, 1]
    tag = good.split(".")[1]
    tampered = [good + "x", good + " ", good.upper(), "v2" + good[2:], good.replace(tag, tag[::-1]), f"v1.{tag}.0",
                f"v1.{tag}.-1", f"v1.{tag}.01", f"v1.{tag}.1_000", f"v1.{tag}.+5", f"v1.{tag}.\u0661",
                f"v1.{tag}.5.5", f"v1.{tag}", "v1." + "A" * 10_000, "[" * 100_000, v1_token(unique("b"), 2)]
    for bad in tampered:
        with pytest.raises(InvalidArgument) as exc:
            queries.list_transactions(store, acct, 5, bad)
        assert exc.value.reason == "INVALID_PAGE_TOKEN", bad


@pytest.mark.parametrize("sequence", [2**63, 2**63 + 1, 10**19 - 1, 10**30])
def test_a_v1_page_token_with_a_sequence_past_int64_is_invalid_argument(sqlite_engine, sequence):
    acct = unique("a")
    ok(sql_run(sqlite_engine, credit(acct, 5))[0])
    with pytest.raises(InvalidArgument) as exc:
        queries.list_transactions(SqlAlchemyLedgerQueries(sqlite_engine), acct, 10, v1_token(acct, sequence))
    assert exc.value.reason == "INVALID_PAGE_TOKEN"
    last = queries.list_transactions(SqlAlchemyLedgerQueries(sqlite_engine), acct, 10, v1_token(acct, 2**63 - 1))
    assert [t.sequence for t in last.transactions] == [1]


def test_every_replay_is_authorised_like_the_request_it_repeats():
    store, acct = FakeLedgerStore(), unique("a")
    ok(run(store, c.Credit(unique("r"), acct, 20, LotSource.PURCHASE), caller="billing")[0])
    purchase = c.Credit(unique("r"), acct, 5, LotSource.PURCHASE)
    ok(run(store, purchase, caller="billing")[0])
    boost = c.PlaceHold(unique("r"), acct, 4, SpendReason.BOOST, "job:j")
    hold_id = ok(run(store, boost, caller="ads")[0]).hold_id
    release = c.ReleaseHold(unique("r"), hold_id)
    ok(run(store, release, caller="ads")[0])
    badge = c.Spend(unique("r"), acct, 1, SpendReason.BADGE)
    spent = ok(run(store, badge, caller="ads")[0]).transaction
    proposal = c.Spend(unique("r"), acct, 2, SpendReason.PROPOSAL, "job:j")
    spend = ok(run(store, proposal, caller="marketplace")[0]).transaction
    ret = c.ReturnConnects(unique("r"), spend.transaction_id, ReturnReason.JOB_REMOVED_TOS)
    ok(run(store, ret, caller="marketplace")[0])
    before = store.wallets[acct].sequence
    for cmd, caller in [(purchase, "marketplace"), (boost, "marketplace"), (release, "marketplace"),
                        (badge, "billing"), (ret, "ads"), (ret, "billing")]:
        (out,) = run(store, cmd, caller=caller)
        assert out.error is not None and out.error.reason == "CALLER_NOT_ALLOWED", (cmd.method, caller)
    # Callers who could have made the request get the first answer.
    for cmd, caller in [(purchase, "billing"), (boost, "ads"), (release, "ads"), (badge, "ads"),
                        (proposal, "ads"), (ret, "operator")]:
        (out,) = run(store, cmd, caller=caller)
        assert out.replayed and out.error is None, (cmd.method, caller)
    assert spent.spend_reason is SpendReason.BADGE and store.wallets[acct].sequence == before


def test_a_proposal_capture_replays_to_any_caller():
    store, acct = FakeLedgerStore(), unique("a")
    ok(run(store, credit(acct, 10))[0])
    hold_id = ok(run(store, c.PlaceHold(unique("r"), acct, 4, SpendReason.PROPOSAL), caller="marketplace")[0]).hold_id
    capture = c.CaptureHold(unique("r"), hold_id, 4)
    first = ok(run(store, capture, caller="marketplace")[0])
    (again,) = run(store, capture, caller="ads")
    assert again.replayed and again.receipt.transaction.transaction_id == first.transaction.transaction_id


def test_credit_cannot_make_return_lots():
    with pytest.raises(InvalidArgument) as exc:
        c.Credit(unique("r"), "a", 5, LotSource.RETURN)
    assert (exc.value.reason, exc.value.metadata["field"]) == ("SOURCE_NOT_ALLOWED", "source")
    assert "ReturnConnects" in exc.value.message


@pytest.mark.parametrize(("caller", "allowed"), [("marketplace", True), ("operator", True), ("tests", True),
                                                 ("connects", True), ("ads", False), ("billing", False)])
def test_only_the_marketplace_operators_tests_and_the_service_may_return_connects(caller, allowed):
    store, acct = FakeLedgerStore(), unique("a")
    ok(run(store, credit(acct, 10))[0])
    spend = ok(run(store, c.Spend(unique("r"), acct, 4, SpendReason.PROPOSAL, "job:j"))[0]).transaction
    ret = c.ReturnConnects(unique("r"), spend.transaction_id, ReturnReason.JOB_CANCELLED_BEFORE_CONTRACT)
    if not allowed:
        with pytest.raises(PermissionDenied):
            handlers.precheck(ret, caller)
    (out,) = run(store, ret, caller=caller)
    assert (out.error is None) is allowed
    if not allowed:
        assert out.error.reason == "CALLER_NOT_ALLOWED" and ret.request_id not in store.requests
    assert store.wallets[acct].available == (10 if allowed else 6)


@pytest.mark.parametrize("caller", ["tests", "ads", "marketplace"])
def test_only_the_service_runs_the_sweeps(caller):
    store, acct = FakeLedgerStore(), unique("a")
    ok(run(store, credit(acct, 10))[0])
    outs = run(store, c.ExpireLots(acct), c.ExpireHold("h"), caller=caller, now=NOW + 2 * YEAR)
    assert [o.error.reason for o in outs] == ["CALLER_NOT_ALLOWED"] * 2
    assert store.wallets[acct].available == 10


@pytest.mark.parametrize("first", ["release", "capture"])
def test_a_hold_past_its_ttl_resolves_as_expired_whichever_call_touches_it_first(first):
    store, acct = FakeLedgerStore(), unique("a")
    ok(run(store, credit(acct, 10))[0])
    ttl = timedelta(hours=1)
    hold_id = ok(run(store, c.PlaceHold(unique("r"), acct, 4, SpendReason.BOOST, ttl=ttl), caller="ads")[0]).hold_id
    late = NOW + ttl
    touch = c.ReleaseHold(unique("r"), hold_id) if first == "release" else c.CaptureHold(unique("r"), hold_id, 4)
    (out,) = run(store, touch, caller="ads", now=late)
    assert (out.error.code, out.error.reason) == ("FAILED_PRECONDITION", "HOLD_EXPIRED")
    assert touch.request_id not in store.requests, "a refusal is not stored: a retry is re-evaluated"
    w = store.wallets[acct]
    assert w.holds[hold_id].status is HoldStatus.EXPIRED and (w.available, w.held) == (10, 0)
    kinds = [t.kind for t in store.transactions_by_id.values() if t.hold_id == hold_id]
    assert sorted(kinds) == [TransactionKind.HOLD, TransactionKind.RELEASE]
    assert store.due_holds(late, 10) == []
    (retry,) = run(store, touch, caller="ads", now=late)
    assert (retry.error.reason, retry.error.metadata["status"]) == ("HOLD_NOT_OPEN", "EXPIRED")
    # Just before the ttl a release is an ordinary release.
    other = ok(run(store, c.PlaceHold(unique("r"), acct, 4, SpendReason.BOOST, ttl=ttl), caller="ads")[0]).hold_id
    ok(run(store, c.ReleaseHold(unique("r"), other), caller="ads", now=NOW + ttl - timedelta(microseconds=1))[0])
    assert store.wallets[acct].holds[other].status is HoldStatus.RELEASED


def wallet_rows(engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(sa.select(wallets.c.account_id)).scalars())


def test_refused_spends_and_holds_on_unknown_accounts_write_nothing(sqlite_engine):
    ghost, other, fresh = unique("ghost"), unique("other"), unique("fresh")
    ok(sql_run(sqlite_engine, credit(other, 5))[0])
    before = wallet_rows(sqlite_engine)
    outs = sql_run(sqlite_engine, c.Spend(unique("r"), ghost, 1, SpendReason.PROPOSAL),
                   c.PlaceHold(unique("r"), ghost, 1, SpendReason.PROPOSAL),
                   c.Spend(unique("r"), other, 2, SpendReason.PROPOSAL),
                   c.Spend(unique("r"), fresh, 1, SpendReason.PROPOSAL), credit(fresh, 3),
                   c.Spend(unique("r"), fresh, 1, SpendReason.PROPOSAL))
    assert [o.error.reason if o.error else "OK" for o in outs] == ["INSUFFICIENT_CONNECTS"] * 2 + ["OK"] + [
        "INSUFFICIENT_CONNECTS", "OK", "OK"]
    assert (outs[0].error.metadata["requested"], outs[0].error.metadata["available"]) == ("1", "0")
    assert wallet_rows(sqlite_engine) - before == {fresh}
    (alone,) = sql_run(sqlite_engine, c.PlaceHold(unique("r"), ghost, 1, SpendReason.PROPOSAL))
    assert alone.error.reason == "INSUFFICIENT_CONNECTS" and ghost not in wallet_rows(sqlite_engine)
    (denied,) = sql_run(sqlite_engine, c.Credit(unique("r"), ghost, 1, LotSource.PURCHASE), caller="marketplace")
    assert denied.error.reason == "CALLER_NOT_ALLOWED" and ghost not in wallet_rows(sqlite_engine)


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
        async with running(connects_app(flaky_uow, store, clock=lambda: NOW, BATCH_MAX="64")) as app:
            await app.ledger.mutate(credit(acct, 20), "tests")
            return await asyncio.gather(*(app.ledger.execute(c.PlaceHold(unique("r"), acct, 3,
                                                                         SpendReason.PROPOSAL), "tests")
                                          for _ in range(8)))

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
