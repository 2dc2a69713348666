"""Who may do what in the service layer (fakes): finer rules than the gRPC policy, replays, sweeps."""

from __future__ import annotations

import pytest

from services.connects.domain import commands as c
from services.connects.domain.model import LotSource, ReturnReason, SpendReason
from services.connects.service_layer import handlers
from services.kit.errors import PermissionDenied
from tests.conftest import unique
from tests.unit.connects.conftest import NOW, YEAR, credit, ok, run
from tests.unit.connects.fakes import FakeLedgerStore


def test_replaying_an_ads_capture_as_another_caller_is_refused():
    store, acct = FakeLedgerStore(), unique("a")
    ok(run(store, credit(acct, 10))[0])
    hold_id = ok(run(store, c.PlaceHold(unique("r"), acct, 4, SpendReason.BOOST), caller="ads")[0]).hold_id
    capture = c.CaptureHold(unique("r"), hold_id, 4)
    ok(run(store, capture, caller="ads")[0])
    (replay,) = run(store, capture, caller="marketplace")
    assert replay.error is not None and replay.error.reason == "CALLER_NOT_ALLOWED"


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


@pytest.mark.parametrize(("caller", "allowed"), [("marketplace", True), ("operator", True), ("tests", False),
                                                 ("connects", True), ("ads", False), ("billing", False)])
def test_only_the_marketplace_operators_and_the_service_may_return_connects(caller, allowed):
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
