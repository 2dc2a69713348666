"""Service layer with fakes: idempotency, authorisation, batching, returns, sweeps, queries."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from services.connects.domain import commands as c
from services.connects.domain.model import HoldStatus, LotSource, ReturnReason, SpendReason, TransactionKind
from services.connects.service_layer import handlers, queries
from services.kit.errors import DomainError, InvalidArgument
from services.kit.server import running
from tests.conftest import unique
from tests.support.connects import connects_app
from tests.unit.connects.conftest import NOW, FlakyUnitOfWorks, credit, run
from tests.unit.connects.fakes import FakeLedgerStore


class Recorder(handlers.NullMetrics):
    def __init__(self) -> None:
        self.replays: list[str] = []
        self.refusals: list[str] = []

    def replayed(self, method):
        self.replays.append(method)

    def refused(self, method, error):
        self.refusals.append(error.reason)


def test_same_request_id_returns_the_first_answer_and_counts_a_replay():
    store, metrics, acct = FakeLedgerStore(), Recorder(), unique("a")
    run(store, credit(acct, 10))
    spend = c.Spend(unique("r"), acct, 3, SpendReason.PROPOSAL, "job:j1")
    (first,) = run(store, spend)
    (again,) = run(store, spend, metrics=metrics)
    assert again.replayed and again.receipt == first.receipt
    assert metrics.replays == ["Spend"]
    assert store.wallets[acct].available == 7, "applied once"


def test_same_request_id_with_a_different_request_is_refused():
    store, acct = FakeLedgerStore(), unique("a")
    run(store, credit(acct, 10))
    rid = unique("r")
    run(store, c.Spend(rid, acct, 3, SpendReason.PROPOSAL))
    (out,) = run(store, c.Spend(rid, acct, 4, SpendReason.PROPOSAL))
    assert out.error.code == "ALREADY_EXISTS" and out.error.reason == "REQUEST_ID_REUSED"
    (other_method,) = run(store, c.ReleaseHold(rid, "h"))
    assert other_method.error.reason == "REQUEST_ID_REUSED"


def test_a_refused_request_stores_nothing_so_a_retry_is_re_evaluated():
    store, acct = FakeLedgerStore(), unique("a")
    spend = c.Spend(unique("r"), acct, 5, SpendReason.PROPOSAL)
    (out,) = run(store, spend)
    assert out.error.reason == "INSUFFICIENT_CONNECTS"
    run(store, credit(acct, 5))
    (retry,) = run(store, spend)
    assert retry.error is None and not retry.replayed


def test_one_refused_command_does_not_fail_its_batch_neighbours():
    store, a, b = FakeLedgerStore(), unique("a"), unique("b")
    run(store, credit(a, 5), credit(b, 5))
    outs = run(store, c.Spend(unique("r"), a, 3, SpendReason.PROPOSAL),
               c.Spend(unique("r"), a, 3, SpendReason.PROPOSAL),
               c.Spend(unique("r"), b, 5, SpendReason.PROPOSAL))
    assert [o.error.reason if o.error else "OK" for o in outs] == ["OK", "INSUFFICIENT_CONNECTS", "OK"]
    assert (store.wallets[a].available, store.wallets[b].available) == (2, 0)


@pytest.mark.parametrize(("caller", "allowed"), [("billing", True), ("ads", False), ("tests", False)])
def test_only_billing_may_credit_purchased_connects(caller, allowed):
    cmd = credit(unique("a"), source=LotSource.PURCHASE)
    if allowed:
        handlers.precheck(cmd, caller)
    else:
        with pytest.raises(DomainError) as exc:
            handlers.precheck(cmd, caller)
        assert (exc.value.code, exc.value.reason) == ("PERMISSION_DENIED", "CALLER_NOT_ALLOWED")


@pytest.mark.parametrize("reason", [SpendReason.BOOST, SpendReason.BADGE, SpendReason.PROMOTED_PROFILE])
def test_only_ads_may_hold_spend_or_capture_for_ad_products(reason):
    store, acct = FakeLedgerStore(), unique("a")
    run(store, credit(acct, 10))
    hold = c.PlaceHold(unique("r"), acct, 4, reason)
    with pytest.raises(DomainError, match="ads only"):
        handlers.precheck(hold, "marketplace")
    (held,) = run(store, hold, caller="ads")
    hold_id = held.receipt.hold_id
    (out,) = run(store, c.CaptureHold(unique("r"), hold_id, 4), caller="marketplace")
    assert out.error.reason == "CALLER_NOT_ALLOWED"
    (ok,) = run(store, c.CaptureHold(unique("r"), hold_id, 4), caller="ads")
    assert ok.error is None


def test_proposal_holds_are_open_to_other_callers():
    store, acct = FakeLedgerStore(), unique("a")
    run(store, credit(acct, 10))
    handlers.precheck(c.PlaceHold(unique("r"), acct, 4, SpendReason.PROPOSAL), "marketplace")


def test_capture_and_release_of_an_unknown_hold_are_not_found():
    store = FakeLedgerStore()
    outs = run(store, c.CaptureHold(unique("r"), "nope", 1), c.ReleaseHold(unique("r"), "nope"),
               c.ReturnConnects(unique("r"), "nope", ReturnReason.JOB_REMOVED_TOS))
    assert [(o.error.code, o.error.reason) for o in outs] == [
        ("NOT_FOUND", "HOLD_NOT_FOUND"), ("NOT_FOUND", "HOLD_NOT_FOUND"), ("NOT_FOUND", "TRANSACTION_NOT_FOUND")]


def test_capture_then_release_in_one_batch_only_the_first_wins():
    store, acct = FakeLedgerStore(), unique("a")
    run(store, credit(acct, 10))
    (held,) = run(store, c.PlaceHold(unique("r"), acct, 6, SpendReason.PROPOSAL))
    hold_id = held.receipt.hold_id
    cap, rel = run(store, c.CaptureHold(unique("r"), hold_id, 6), c.ReleaseHold(unique("r"), hold_id))
    assert cap.error is None and rel.error.reason == "HOLD_NOT_OPEN"
    assert store.wallets[acct].holds[hold_id].status is HoldStatus.CAPTURED


def test_a_spend_is_returned_once_even_with_two_request_ids():
    store, acct = FakeLedgerStore(), unique("a")
    run(store, credit(acct, 10))
    (spent,) = run(store, c.Spend(unique("r"), acct, 4, SpendReason.PROPOSAL, "job:j"))
    tx_id = spent.receipt.transaction.transaction_id
    first, second = run(store, c.ReturnConnects(unique("r"), tx_id, ReturnReason.JOB_REMOVED_TOS),
                        c.ReturnConnects(unique("r"), tx_id, ReturnReason.JOB_REMOVED_TOS))
    (third,) = run(store, c.ReturnConnects(unique("r"), tx_id, ReturnReason.JOB_CANCELLED_BEFORE_CONTRACT))
    assert first.error is None
    assert second.error.reason == third.error.reason == "ALREADY_RETURNED"
    assert store.wallets[acct].available == 10


def test_sweeps_expire_due_lots_and_holds_and_are_safe_to_repeat():
    store, acct = FakeLedgerStore(), unique("a")
    run(store, credit(acct, 10))
    (held,) = run(store, c.PlaceHold(unique("r"), acct, 4, SpendReason.PROPOSAL, ttl=timedelta(hours=1)))
    later = NOW + timedelta(hours=2)
    assert store.due_holds(later, 10) == [held.receipt.hold_id]
    for _ in range(2):
        run(store, *(c.ExpireHold(h) for h in store.due_holds(later, 10)), caller="connects", now=later)
    assert store.wallets[acct].holds[held.receipt.hold_id].status is HoldStatus.EXPIRED
    next_year = NOW + timedelta(days=366)
    assert store.due_lot_accounts(next_year, 10) == [acct]
    run(store, c.ExpireLots(acct), c.ExpireLots(acct), caller="connects", now=next_year)
    kinds = [t.kind for t in store.transactions(acct, None, 10)]
    assert kinds.count(TransactionKind.EXPIRE) == 1 and store.wallets[acct].available == 0


def test_every_committed_transaction_reaches_the_outbox():
    store, acct = FakeLedgerStore(), unique("a")
    run(store, credit(acct, 10), c.Spend(unique("r"), acct, 4, SpendReason.PROPOSAL))
    assert [t.kind for t in store.outbox] == [TransactionKind.CREDIT, TransactionKind.SPEND]


def test_balance_hides_connects_past_their_date_and_shows_what_expires_soon():
    store, acct = FakeLedgerStore(), unique("a")
    run(store, credit(acct, 10), now=NOW - timedelta(days=340))
    run(store, credit(acct, 5), now=NOW)
    assert queries.get_balance(store, acct, NOW).expiring_within_30_days == 10
    late = queries.get_balance(store, acct, NOW + timedelta(days=30))
    assert (late.available, [lot.amount for lot in late.lots]) == (5, [5])
    assert queries.get_balance(store, unique("nobody"), NOW).available == 0


def test_transactions_page_newest_first_with_an_opaque_token():
    store, acct = FakeLedgerStore(), unique("a")
    run(store, *(credit(acct, i + 1) for i in range(5)))
    first = queries.list_transactions(store, acct, 2, "")
    second = queries.list_transactions(store, acct, 2, first.next_page_token)
    third = queries.list_transactions(store, acct, 2, second.next_page_token)
    assert [t.amount for t in first.transactions + second.transactions + third.transactions] == [5, 4, 3, 2, 1]
    assert third.next_page_token == ""
    with pytest.raises(InvalidArgument) as exc:
        queries.list_transactions(store, unique("other"), 2, first.next_page_token)
    assert exc.value.reason == "INVALID_PAGE_TOKEN"


@pytest.mark.parametrize(("build", "reason", "field"), [
    (lambda: c.Spend("r", "a", 0, SpendReason.PROPOSAL), "AMOUNT_NOT_POSITIVE", "amount"),
    (lambda: c.Spend("r", "a", -5, SpendReason.PROPOSAL), "AMOUNT_NOT_POSITIVE", "amount"),
    (lambda: c.Spend("r", "a", 2**63, SpendReason.PROPOSAL), "INVALID_FIELD", "amount"),
    (lambda: c.Spend("", "a", 1, SpendReason.PROPOSAL), "INVALID_FIELD", "request_id"),
    (lambda: c.Spend("r", " ", 1, SpendReason.PROPOSAL), "INVALID_FIELD", "account_id"),
    (lambda: c.Spend("r", "a" * 129, 1, SpendReason.PROPOSAL), "FIELD_TOO_LONG", "account_id"),
    (lambda: c.Spend("r", "a", 1, SpendReason.PROPOSAL, "x" * 257), "FIELD_TOO_LONG", "reference"),
    (lambda: c.Spend("r", "a", 1, "PROPOSAL"), "UNKNOWN_ENUM_VALUE", "reason"),
    (lambda: c.PlaceHold("r", "a", 1, SpendReason.BOOST, ttl=timedelta(0)), "TTL_OUT_OF_RANGE", "ttl"),
    (lambda: c.PlaceHold("r", "a", 1, SpendReason.BOOST, ttl=timedelta(days=91)), "TTL_OUT_OF_RANGE", "ttl"),
    (lambda: c.CaptureHold("r", "", 1), "INVALID_FIELD", "hold_id"),
    (lambda: c.ReturnConnects("r", "t", None), "UNKNOWN_ENUM_VALUE", "reason"),
])
def test_bad_commands_are_refused_with_a_reason_and_the_field(build, reason, field):
    with pytest.raises(InvalidArgument) as exc:
        build()
    assert (exc.value.reason, exc.value.metadata["field"]) == (reason, field)


async def test_batcher_applies_concurrent_duplicates_once_and_answers_both():
    store, acct = FakeLedgerStore(), unique("a")
    async with running(connects_app(store.uow, store, clock=lambda: NOW, BATCH_MAX="64")) as app:
        ledger = app.ledger
        await ledger.mutate(credit(acct, 100), "operator")
        spend = c.Spend(unique("r"), acct, 1, SpendReason.PROPOSAL)
        outs = await asyncio.gather(*(ledger.execute(spend, "operator") for _ in range(10)))
        spends = await asyncio.gather(*(ledger.mutate(c.Spend(unique("r"), acct, 1, SpendReason.PROPOSAL),
                                                      "operator") for _ in range(50)))
    assert len({o.receipt.transaction.transaction_id for o in outs}) == 1
    assert sum(o.replayed for o in outs) == 9
    assert len(spends) == 50 and store.wallets[acct].available == 49


async def test_batcher_retries_a_failed_batch_command_by_command():
    store, acct = FakeLedgerStore(), unique("a")
    uow_factory = FlakyUnitOfWorks(store)
    async with running(connects_app(uow_factory, store, clock=lambda: NOW)) as app:
        await app.ledger.mutate(credit(acct, 100), "operator")
        results = await asyncio.gather(*(app.ledger.mutate(credit(acct, 1), "operator") for _ in range(5)))
    assert uow_factory.calls >= 3, "the failed unit of work was followed by retries"
    assert len(results) == 5 and store.wallets[acct].available == 105


async def test_a_refusal_before_queuing_is_counted_like_any_other_and_nothing_is_queued():
    store, recorder = FakeLedgerStore(), Recorder()
    calls = {"n": 0}

    def counting_uow():
        calls["n"] += 1
        return store.uow()

    async with running(connects_app(counting_uow, store, clock=lambda: NOW, metrics=recorder)) as app:
        with pytest.raises(DomainError) as exc:
            await app.ledger.mutate(credit(unique("a"), 5, LotSource.PURCHASE), "marketplace")
        refused = await app.ledger.execute(c.ExpireLots(unique("a")), "ads")
    assert exc.value.reason == "CALLER_NOT_ALLOWED"
    assert refused.error is not None and refused.error.reason == "CALLER_NOT_ALLOWED"
    assert recorder.refusals == ["CALLER_NOT_ALLOWED", "CALLER_NOT_ALLOWED"]
    assert calls["n"] == 0, "refused before the batcher opened a unit of work"
