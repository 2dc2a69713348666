"""Ledger totals on real PostgreSQL equal the sums of the journal's rows after a random workload."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from services.connects.adapters.migrations import MIGRATIONS
from services.connects.adapters.repository import SqlAlchemyLedgerQueries, SqlAlchemyLedgerUnitOfWork
from services.connects.domain import commands as c
from services.connects.domain.model import MAX_CONNECTS, SYSTEM_ACCOUNTS, LotSource, SpendReason, TransactionKind
from services.connects.service_layer import queries as q
from services.connects.service_layer.totals import Issued, LedgerTotals
from services.kit.db import make_engine
from services.kit.errors import DomainError
from services.kit.migrations import upgrade
from tests.conftest import unique
from tests.integration.connects.conftest import assert_books_balance, execute_one
from tests.unit.connects.workload import run_workload

pytestmark = pytest.mark.integration
T0 = datetime(2031, 5, 1, 8, 30, tzinfo=UTC)


@pytest.fixture
def fresh_engine(create_database):
    """A database of its own: the totals cover the whole journal, so no other test's rows."""
    engine = make_engine(create_database("connects_totals"), pool_size=4)
    upgrade(engine, MIGRATIONS)
    yield engine
    engine.dispose()


def journal_sums(engine, start: datetime, end: datetime) -> LedgerTotals:
    """The totals computed here, in Python, from every row of the journal (not by the adapter's queries)."""
    with engine.connect() as conn:
        txs = {r.transaction_id: r for r in conn.execute(sa.text(
            "SELECT transaction_id, kind, source, spend_reason, amount, occurred_at FROM ledger_transactions"))}
        legs = conn.execute(sa.text("SELECT transaction_id, ledger_account, amount FROM postings")).all()
        moves = conn.execute(sa.text("SELECT transaction_id, origin_source, amount FROM lot_movements")).all()
    balances = dict.fromkeys(SYSTEM_ACCOUNTS, 0)
    for leg in legs:
        if leg.ledger_account in balances and txs[leg.transaction_id].occurred_at < end:
            balances[leg.ledger_account] += leg.amount
    in_period = {t for t, r in txs.items() if start <= r.occurred_at < end}
    issued: Counter[str] = Counter()
    credits: Counter[str] = Counter()
    for t in in_period:
        if txs[t].kind == "CREDIT":
            issued[txs[t].source] += txs[t].amount
            credits[txs[t].source] += 1
    spent: Counter[tuple[str, str]] = Counter()
    expired: Counter[str] = Counter()
    returned: Counter[str] = Counter()
    reversed_: Counter[str] = Counter()
    for m in moves:
        if m.transaction_id not in in_period:
            continue
        tx = txs[m.transaction_id]
        if tx.kind in ("SPEND", "CAPTURE"):
            spent[(tx.spend_reason, m.origin_source)] += m.amount
        elif tx.kind == "EXPIRE":
            expired[m.origin_source] += m.amount
        elif tx.kind == "RETURN":
            returned[m.origin_source] += m.amount
        elif tx.kind == "REVERSAL":
            reversed_[m.origin_source] += m.amount
    return LedgerTotals(
        start, end, balances, {LotSource(s): Issued(v, credits[s]) for s, v in issued.items()},
        {(SpendReason(r), LotSource(o)): v for (r, o), v in spent.items()},
        {LotSource(o): v for o, v in expired.items()}, {LotSource(o): v for o, v in returned.items()},
        {LotSource(o): v for o, v in reversed_.items()})


def test_ledger_totals_equal_the_sums_of_the_journal_rows_after_a_random_workload(fresh_engine):
    uow_factory = lambda: SqlAlchemyLedgerUnitOfWork(fresh_engine)  # noqa: E731
    rng = random.Random(20311)
    runs = [run_workload(lambda cmd, caller, at: execute_one(uow_factory, cmd, caller, at), T0, seed=seed)
            for seed in (11, 12, 13)]  # three overlapping runs on the same clock: 12 accounts
    ended = max(r.ended for r in runs)
    applied: Counter[str] = Counter()
    for r in runs:
        applied.update(r.applied)
    with fresh_engine.connect() as conn:
        kinds = set(conn.execute(sa.text("SELECT DISTINCT kind FROM ledger_transactions")).scalars())
        rows = conn.execute(sa.text("SELECT count(*) FROM ledger_transactions")).scalar_one()
    assert kinds == {k.value for k in TransactionKind}, "the workload recorded every kind of transaction"
    queries = SqlAlchemyLedgerQueries(fresh_engine)
    windows = [(T0, ended + timedelta(seconds=1)), (T0 - timedelta(days=1), T0), (ended, ended)]
    for _ in range(12):
        a, b = sorted(T0 + (ended - T0) * rng.random() for _ in range(2))
        windows.append((a, b))
    for start, end in windows:
        expected = journal_sums(fresh_engine, start, end)
        assert queries.ledger_totals(start, end) == expected
        assert q.get_ledger_totals(queries, start, end) == expected  # the use case: in range, same figures
    whole = queries.ledger_totals(T0, ended + timedelta(seconds=1))
    assert sum(whole.system_balances.values()) == -sum_wallets(fresh_engine), "wallets and system accounts net"
    assert whole.held == held_in_open_holds(fresh_engine)
    assert_books_balance(fresh_engine)
    print(f"\n{rows} transactions, {len(windows)} windows; applied {dict(applied)}")


def sum_wallets(engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT coalesce(sum(available), 0) FROM wallets")).scalar_one())


def held_in_open_holds(engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(
            "SELECT coalesce(sum(amount), 0) FROM holds WHERE status = 'OPEN'")).scalar_one())


def test_sums_past_int64_are_exact_on_postgres_and_answered_out_of_range_not_overflowed(fresh_engine):
    uow_factory = lambda: SqlAlchemyLedgerUnitOfWork(fresh_engine)  # noqa: E731
    # A journal written before amounts were bounded (the handlers below the Ledger's bound take them).
    for acct in (unique("a"), unique("b"), unique("c")):
        out = execute_one(uow_factory, c.Credit(unique("r"), acct, MAX_CONNECTS, LotSource.PLAN_GRANT), at=T0)
        assert out.error is None
    queries = SqlAlchemyLedgerQueries(fresh_engine)
    totals = queries.ledger_totals(T0, T0 + timedelta(seconds=1))
    assert totals.system_balances["system:issuance"] == -3 * MAX_CONNECTS
    assert totals.issued == {LotSource.PLAN_GRANT: Issued(3 * MAX_CONNECTS, 3)}
    assert queries.system_balances()["wallets"] == 3 * MAX_CONNECTS
    with pytest.raises(DomainError) as exc:
        q.get_ledger_totals(queries, T0, T0 + timedelta(seconds=1))
    assert (exc.value.code, exc.value.reason) == ("FAILED_PRECONDITION", "TOTAL_OUT_OF_RANGE")
    assert exc.value.metadata["total"] == "system_balances[system:issuance]"
