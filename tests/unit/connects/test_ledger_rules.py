"""Wallet rules as the service layer applies them (fakes): the balance limit, hold ttls, what a return
gives back, and refusals inside a batch."""

from __future__ import annotations

from datetime import timedelta

import pytest

from services.connects.domain import commands as c
from services.connects.domain.model import (
    MAX_CONNECTS,
    HoldStatus,
    LotSource,
    ReturnReason,
    SpendReason,
    TransactionKind,
)
from services.kit.errors import InvalidArgument
from tests.conftest import unique
from tests.unit.connects.conftest import NOW, credit, ok, run
from tests.unit.connects.fakes import FakeLedgerStore


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


def test_credit_cannot_make_return_lots():
    with pytest.raises(InvalidArgument) as exc:
        c.Credit(unique("r"), "a", 5, LotSource.RETURN)
    assert (exc.value.reason, exc.value.metadata["field"]) == ("SOURCE_NOT_ALLOWED", "source")
    assert "ReturnConnects" in exc.value.message


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
