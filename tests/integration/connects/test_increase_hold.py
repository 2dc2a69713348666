"""IncreaseHold on real PostgreSQL: racing CaptureHold and ReleaseHold, and refusals that change nothing."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa

from services.connects.domain import commands as c
from services.connects.domain.model import HoldStatus, LotSource, SpendReason
from tests.conftest import unique
from tests.integration.connects.conftest import assert_books_balance, execute_one

pytestmark = pytest.mark.integration

ROUNDS = 60
CREDIT, HOLD, CAPTURE = 100, 10, 7


def ok(outcome):
    assert outcome.error is None, outcome.error
    return outcome.receipt


def snapshot(engine, acct: str, hold_id: str) -> dict[str, object]:
    """Everything of one account a command could change: wallet, lots, hold, journal, outbox."""
    with engine.connect() as conn:
        def rows(sql: str) -> list:
            return [tuple(r) for r in conn.execute(sa.text(sql), {"a": acct, "h": hold_id})]
        return {
            "wallet": rows("SELECT available, held, sequence FROM wallets WHERE account_id = :a"),
            "lots": rows("SELECT lot_id, remaining, held, expired FROM lots WHERE account_id = :a ORDER BY lot_id"),
            "hold": rows("SELECT amount, captured, status, allocations FROM holds WHERE hold_id = :h"),
            "journal": rows("SELECT count(*) FROM ledger_transactions WHERE account_id = :a"),
            "postings": rows("SELECT count(*), coalesce(sum(p.amount), 0) FROM postings p JOIN ledger_transactions t "
                             "USING (transaction_id) WHERE t.account_id = :a"),
            "outbox": rows("SELECT count(*) FROM outbox WHERE key = :a"),
        }


def racer(uow_factory, barrier: threading.Barrier):
    """Run one command (as ads) once every racer is at the barrier."""
    def act(cmd):
        barrier.wait()
        return execute_one(uow_factory, cmd, caller="ads")
    return act


def test_increase_hold_racing_capture_and_release_resolves_each_hold_once_and_the_wallet_matches_the_winners(
        uow_factory, engine):
    winners: Counter[str] = Counter()
    increases_applied = increases_refused = 0
    for round_ in range(ROUNDS):
        acct = unique("acct")
        ok(execute_one(uow_factory, c.Credit(unique("r"), acct, CREDIT, LotSource.PLAN_GRANT)))
        hold_id = ok(execute_one(uow_factory, c.PlaceHold(unique("r"), acct, HOLD, SpendReason.BOOST),
                                 caller="ads")).hold_id
        cmds: list = [c.IncreaseHold(unique("r"), hold_id, HOLD + 1 + i * 3) for i in range(6)]
        cmds += [c.CaptureHold(unique("r"), hold_id, CAPTURE), c.ReleaseHold(unique("r"), hold_id)]
        # Vary who is first at the barrier from round to round.
        cmds = cmds[round_ % len(cmds):] + cmds[:round_ % len(cmds)]
        with ThreadPoolExecutor(len(cmds)) as pool:
            outs = list(pool.map(racer(uow_factory, threading.Barrier(len(cmds))), cmds))
        results = list(zip(cmds, outs, strict=True))
        resolved = [(cmd, o) for cmd, o in results if not isinstance(cmd, c.IncreaseHold) and o.error is None]
        assert len(resolved) == 1, [o.error for _, o in results]
        ((winner, _),) = resolved
        losers = [o for cmd, o in results if not isinstance(cmd, c.IncreaseHold) and o.error is not None]
        assert [o.error.reason for o in losers] == ["HOLD_NOT_OPEN"]
        grown = [o for cmd, o in results if isinstance(cmd, c.IncreaseHold) and o.error is None]
        refused = [o.error.reason for cmd, o in results if isinstance(cmd, c.IncreaseHold) and o.error]
        assert set(refused) <= {"HOLD_NOT_OPEN", "HOLD_DECREASE_NOT_ALLOWED"}
        increases_applied += len(grown)
        increases_refused += len(refused)
        with engine.connect() as conn:
            hold = conn.execute(sa.text("SELECT amount, captured, status FROM holds WHERE hold_id = :h"),
                                {"h": hold_id}).one()
            journal = conn.execute(sa.text("SELECT kind, amount FROM ledger_transactions WHERE hold_id = :h "
                                           "ORDER BY sequence"), {"h": hold_id}).all()
            wallet = conn.execute(sa.text("SELECT available, held FROM wallets WHERE account_id = :a"),
                                  {"a": acct}).one()
        # The hold's final amount is the largest increase that committed before the resolution.
        final = max([HOLD] + [o.receipt.hold_amount for o in grown])
        holds = [amount for kind, amount in journal if kind == "HOLD"]
        assert sum(holds) == hold.amount == final
        assert len(holds) == 1 + sum(o.receipt.transaction is not None for o in grown)
        assert [kind for kind, _ in journal][-1] in ("CAPTURE", "RELEASE")
        assert [kind for kind, _ in journal].count("CAPTURE") + [kind for kind, _ in journal].count("RELEASE") == 1
        if isinstance(winner, c.CaptureHold):
            winners["capture"] += 1
            assert (hold.status, hold.captured) == (HoldStatus.CAPTURED.value, CAPTURE)
            assert journal[-1] == ("CAPTURE", CAPTURE)
            assert (wallet.available, wallet.held) == (CREDIT - CAPTURE, 0)
        else:
            winners["release"] += 1
            assert hold.status == HoldStatus.RELEASED.value and journal[-1] == ("RELEASE", final)
            assert (wallet.available, wallet.held) == (CREDIT, 0)
    assert_books_balance(engine)
    assert winners["capture"] and winners["release"], winners
    assert increases_applied and increases_refused, (increases_applied, increases_refused)
    print(f"\n{ROUNDS} rounds: {dict(winners)} won; increases {increases_applied} applied, "
          f"{increases_refused} refused")


def test_increases_racing_on_one_hold_grow_it_to_the_largest_and_take_each_connect_once(uow_factory, engine):
    acct = unique("acct")
    ok(execute_one(uow_factory, c.Credit(unique("r"), acct, 50, LotSource.BONUS)))
    ok(execute_one(uow_factory, c.Credit(unique("r"), acct, 50, LotSource.PLAN_GRANT)))
    hold_id = ok(execute_one(uow_factory, c.PlaceHold(unique("r"), acct, 5, SpendReason.PROPOSAL))).hold_id
    targets = [20, 45, 60, 80, 95, 100, 101]
    barrier = threading.Barrier(len(targets) + 4)

    def act(i):
        barrier.wait()
        if i < len(targets):
            return execute_one(uow_factory, c.IncreaseHold(unique("r"), hold_id, targets[i]))
        return execute_one(uow_factory, c.Spend(unique("r"), acct, 3, SpendReason.PROPOSAL))

    with ThreadPoolExecutor(len(targets) + 4) as pool:
        outs = list(pool.map(act, range(len(targets) + 4)))
    assert outs[targets.index(101)].error.reason == "INSUFFICIENT_CONNECTS"
    spent = 3 * sum(o.error is None for o in outs[len(targets):])
    with engine.connect() as conn:
        amount = conn.execute(sa.text("SELECT amount FROM holds WHERE hold_id = :h"), {"h": hold_id}).scalar_one()
        wallet = conn.execute(sa.text("SELECT available, held FROM wallets WHERE account_id = :a"),
                              {"a": acct}).one()
    grown = [o.receipt.hold_amount for o in outs[:len(targets)] if o.error is None]
    assert amount == max([*grown, 5])
    assert (wallet.available, wallet.held) == (100 - spent - amount, amount)
    assert_books_balance(engine)


@pytest.mark.parametrize(("new_amount", "reason"), [(31, "INSUFFICIENT_CONNECTS"), (5, "HOLD_DECREASE_NOT_ALLOWED"),
                                                    (6, None)])
def test_a_refused_or_no_op_increase_changes_nothing_on_postgres(uow_factory, engine, new_amount, reason):
    acct = unique("acct")
    ok(execute_one(uow_factory, c.Credit(unique("r"), acct, 20, LotSource.BONUS)))
    ok(execute_one(uow_factory, c.Credit(unique("r"), acct, 10, LotSource.PLAN_GRANT)))
    hold_id = ok(execute_one(uow_factory, c.PlaceHold(unique("r"), acct, 6, SpendReason.BOOST), caller="ads")).hold_id
    before = snapshot(engine, acct, hold_id)
    out = execute_one(uow_factory, c.IncreaseHold(unique("r"), hold_id, new_amount), caller="ads")
    if reason is None:
        assert out.error is None and out.receipt.transaction is None and out.receipt.hold_amount == 6
    else:
        assert out.error.reason == reason
    assert snapshot(engine, acct, hold_id) == before
    assert before["wallet"] == [(24, 6, 3)] and before["journal"] == [(3,)]


def test_an_increase_persists_the_grown_hold_so_a_later_capture_and_return_use_its_lots(uow_factory, engine, queries):
    acct = unique("acct")
    ok(execute_one(uow_factory, c.Credit(unique("r"), acct, 4, LotSource.PURCHASE), caller="billing"))
    ok(execute_one(uow_factory, c.Credit(unique("r"), acct, 10, LotSource.BONUS)))
    hold = ok(execute_one(uow_factory, c.PlaceHold(unique("r"), acct, 3, SpendReason.BOOST, "job:j/proposal:p/boost"),
                          caller="ads"))
    grown = ok(execute_one(uow_factory, c.IncreaseHold(unique("r"), hold.hold_id, 9), caller="ads"))
    assert [(m.source, m.amount) for m in grown.transaction.movements] == [(LotSource.PURCHASE, 1),
                                                                          (LotSource.BONUS, 5)]
    capture = ok(execute_one(uow_factory, c.CaptureHold(unique("r"), hold.hold_id, 8), caller="ads")).transaction
    assert sorted((m.source, m.amount) for m in capture.movements) == [(LotSource.BONUS, 4), (LotSource.PURCHASE, 4)]
    (returned,) = queries.job_transactions("j")
    assert returned.transaction_id == capture.transaction_id
    back = ok(execute_one(uow_factory, c.ReturnConnects(unique("r"), capture.transaction_id,
                                                         c.ReturnReason.JOB_CANCELLED_BEFORE_CONTRACT)))
    assert sorted((m.origin_source, m.amount) for m in back.transaction.movements) == [
        (LotSource.BONUS, 4), (LotSource.PURCHASE, 4)]
    with engine.connect() as conn:
        wallet = conn.execute(sa.text("SELECT available, held FROM wallets WHERE account_id = :a"),
                              {"a": acct}).one()
    assert (wallet.available, wallet.held) == (14, 0)
    assert_books_balance(engine)
