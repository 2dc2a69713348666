"""The SQL adapter on SQLite: the journal balances, system sums, and refusals that write nothing."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from services.connects.adapters.repository import SqlAlchemyLedgerQueries
from services.connects.adapters.tables import wallets
from services.connects.domain import commands as c
from services.connects.domain.model import MAX_CONNECTS, LotSource, ReturnReason, SpendReason, TransactionKind
from services.connects.service_layer import queries
from tests.conftest import unique
from tests.unit.connects.conftest import NOW, YEAR, credit, ok, sql_run


def wallet_rows(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(sa.select(wallets.c.account_id)).scalars())


def test_system_balances_survive_two_maximal_credits_on_sqlite(sqlite_engine):
    for acct in (unique("a"), unique("b")):
        ok(sql_run(sqlite_engine, credit(acct, MAX_CONNECTS, LotSource.BONUS))[0])
    balances = SqlAlchemyLedgerQueries(sqlite_engine).system_balances()
    assert balances["system:issuance"] == -2 * MAX_CONNECTS
    assert balances["wallets"] == 2 * MAX_CONNECTS


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
