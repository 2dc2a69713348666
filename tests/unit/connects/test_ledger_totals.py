"""Ledger totals (GetLedgerTotals' use case): input rules, figures on the fakes, and the SQL adapter on SQLite."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.connects.adapters.repository import SqlAlchemyLedgerQueries, SqlAlchemyLedgerUnitOfWork
from services.connects.domain import commands as c
from services.connects.domain.model import MAX_CONNECTS, SYSTEM_ACCOUNTS, LotSource, ReturnReason, SpendReason
from services.connects.service_layer import handlers, queries
from services.connects.service_layer.handlers import Envelope
from services.connects.service_layer.totals import Issued
from services.kit.errors import DomainError, InvalidArgument
from tests.conftest import unique
from tests.unit.connects.conftest import run_ok as ok
from tests.unit.connects.fakes import FakeLedgerStore
from tests.unit.connects.workload import run_workload

T0 = datetime(2026, 3, 1, tzinfo=UTC)
H = timedelta(hours=1)


@pytest.mark.parametrize(("start", "end", "field"), [(None, T0, "start_time"), (T0, None, "end_time"),
                                                     (T0, T0 - timedelta(microseconds=1), "end_time")])
def test_a_missing_time_or_an_end_before_the_start_is_invalid(start, end, field):
    with pytest.raises(InvalidArgument) as exc:
        queries.get_ledger_totals(FakeLedgerStore(), start, end)
    assert (exc.value.reason, exc.value.metadata["field"]) == ("INVALID_FIELD", field)


def test_an_empty_period_counts_nothing_but_keeps_the_balances():
    store, acct = FakeLedgerStore(), unique("a")
    ok(store, c.Credit(unique("r"), acct, 7, LotSource.BONUS), T0)
    totals = queries.get_ledger_totals(store, T0 + H, T0 + H)
    assert totals.system_balances == {**dict.fromkeys(SYSTEM_ACCOUNTS, 0), "system:issuance": -7}
    assert (totals.issued, totals.spent, totals.expired, totals.returned, totals.held) == ({}, {}, {}, {}, 0)


def test_totals_of_a_period_by_source_reason_and_origin():
    store, acct = FakeLedgerStore(), unique("a")
    ok(store, c.Credit(unique("r"), acct, 30, LotSource.PURCHASE), T0, caller="billing")  # before the period
    ok(store, c.Credit(unique("r"), acct, 10, LotSource.BONUS), T0 + H)
    ok(store, c.Credit(unique("r"), acct, 5, LotSource.BONUS), T0 + 2 * H)
    spend = ok(store, c.Spend(unique("r"), acct, 32, SpendReason.PROPOSAL, "job:j"), T0 + 3 * H)  # 30 P + 2 B
    hold = ok(store, c.PlaceHold(unique("r"), acct, 4, SpendReason.BOOST), T0 + 4 * H, caller="ads")
    ok(store, c.IncreaseHold(unique("r"), hold.hold_id, 6), T0 + 5 * H, caller="ads")
    ok(store, c.CaptureHold(unique("r"), hold.hold_id, 5), T0 + 6 * H, caller="ads")  # 5 BONUS, 1 back
    ok(store, c.ReturnConnects(unique("r"), spend.recorded.transaction_id, ReturnReason.JOB_REMOVED_TOS),
       T0 + 7 * H)  # 30 back as RETURN lots of origin PURCHASE, 2 of origin BONUS
    other = ok(store, c.PlaceHold(unique("r"), acct, 3, SpendReason.PROPOSAL), T0 + 8 * H)
    ok(store, c.ExpireLots(acct), T0 + 400 * 24 * H, caller="connects")  # after the period: not counted
    totals = queries.get_ledger_totals(store, T0 + H, T0 + 9 * H)
    assert totals.issued == {LotSource.BONUS: Issued(15, 2)}
    assert totals.spent == {(SpendReason.PROPOSAL, LotSource.PURCHASE): 30, (SpendReason.PROPOSAL, LotSource.BONUS): 2,
                            (SpendReason.BOOST, LotSource.BONUS): 5}
    assert totals.returned == {LotSource.PURCHASE: 30, LotSource.BONUS: 2}
    assert totals.expired == {}
    assert totals.held == 3 == store.wallets[acct].holds[other.hold_id].amount
    assert totals.system_balances == {"system:issuance": -15, "system:sales": -30, "system:revenue": 37 - 32,
                                      "system:breakage": 0, "system:holds": 3}
    later = queries.get_ledger_totals(store, T0 + 9 * H, T0 + 401 * 24 * H)
    # Every lot is past its date; what the open hold reserves (3 of the RETURN lot of origin PURCHASE) stays.
    assert later.expired == {LotSource.PURCHASE: 30 - 3, LotSource.BONUS: 2 + 3 + 5}
    assert later.system_balances["system:breakage"] == 37 and later.held == 3
    assert sum(later.system_balances.values()) == -store.wallets[acct].available


@pytest.mark.parametrize("seed", range(4))
def test_the_sql_totals_on_sqlite_equal_the_fakes_after_a_random_workload(sqlite_engine, seed):
    fake = FakeLedgerStore()

    def on_fake(cmd, caller, at):
        (out,) = handlers.execute(fake.uow(), [Envelope(cmd, caller)], at)
        return out

    def on_sqlite(cmd, caller, at):
        (out,) = handlers.execute(SqlAlchemyLedgerUnitOfWork(sqlite_engine), [Envelope(cmd, caller)], at)
        return out

    a = run_workload(on_fake, T0, seed=seed)
    b = run_workload(on_sqlite, T0, seed=seed)
    assert (a.applied, a.refused, a.ended) == (b.applied, b.refused, b.ended)
    assert {"Credit", "Spend", "Hold", "IncreaseHold", "CaptureHold", "ReleaseHold", "ReturnConnects"} <= set(a.applied)
    sql = SqlAlchemyLedgerQueries(sqlite_engine)
    span = a.ended - T0
    for start, end in [(T0, a.ended + H), (T0 + span / 3, T0 + 2 * span / 3), (T0 + span / 2, a.ended + H)]:
        mine, theirs = sql.ledger_totals(start, end), fake.ledger_totals(start, end)
        assert mine == theirs
    whole = fake.ledger_totals(T0, a.ended + H)
    assert whole.expired and whole.returned and whole.spent and whole.issued.keys() == {
        LotSource.PURCHASE, LotSource.PLAN_GRANT, LotSource.BONUS}


def test_sums_past_int64_are_exact_on_sqlite_and_refused_as_out_of_range_not_overflowed(sqlite_engine):
    # A journal written before amounts were bounded: two maximal credits (the handlers take them).
    for acct in (unique("a"), unique("b")):
        (out,) = handlers.execute(SqlAlchemyLedgerUnitOfWork(sqlite_engine),
                                  [Envelope(c.Credit(unique("r"), acct, MAX_CONNECTS, LotSource.BONUS), "operator")],
                                  T0)
        assert out.error is None
    sql = SqlAlchemyLedgerQueries(sqlite_engine)
    totals = sql.ledger_totals(T0, T0 + H)
    assert totals.system_balances["system:issuance"] == -2 * MAX_CONNECTS
    assert totals.issued == {LotSource.BONUS: Issued(2 * MAX_CONNECTS, 2)}
    with pytest.raises(DomainError) as exc:
        queries.get_ledger_totals(sql, T0, T0 + H)
    assert (exc.value.code, exc.value.reason) == ("FAILED_PRECONDITION", "TOTAL_OUT_OF_RANGE")
