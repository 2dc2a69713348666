"""ReverseCredit on real PostgreSQL: at most once per credit under concurrency, books balanced, lots conserved."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa

from services.connects.domain import commands as c
from services.connects.domain.model import LotSource, SpendReason, TransactionKind
from services.connects.service_layer import queries as q
from tests.conftest import unique
from tests.integration.connects.conftest import assert_books_balance, execute_one, now

pytestmark = pytest.mark.integration


def test_concurrent_reversals_of_one_credit_remove_its_unspent_connects_once(uow_factory, queries, engine):
    acct = unique("acct")
    credit = execute_one(uow_factory, c.Credit(unique("r"), acct, 60, LotSource.PURCHASE, "purchase:p"),
                         caller="billing").receipt.transaction
    assert execute_one(uow_factory, c.Spend(unique("r"), acct, 21, SpendReason.PROPOSAL, "job:j")).error is None
    barrier = threading.Barrier(16)

    def reverse(_):
        barrier.wait()
        return execute_one(uow_factory, c.ReverseCredit(unique("r"), credit.transaction_id), caller="billing")

    with ThreadPoolExecutor(16) as pool:
        outs = list(pool.map(reverse, range(16)))
    assert Counter(o.error.reason if o.error else "OK" for o in outs) == {"OK": 1, "ALREADY_REVERSED": 15}
    (won,) = [o for o in outs if o.error is None]
    assert (won.receipt.transaction.amount, won.receipt.already_spent) == (39, 21)
    assert q.get_balance(queries, acct, now()).available == 0
    with engine.connect() as conn:
        kinds = conn.execute(sa.text("SELECT kind FROM ledger_transactions WHERE account_id = :a ORDER BY sequence"),
                             {"a": acct}).scalars().all()
        sales = conn.execute(sa.text("SELECT sum(p.amount) FROM postings p JOIN ledger_transactions t USING "
                                     "(transaction_id) WHERE t.account_id = :a AND ledger_account = 'system:sales'"),
                             {"a": acct}).scalar_one()
    assert kinds == ["CREDIT", "SPEND", TransactionKind.REVERSAL.value]
    assert sales == -60 + 39
    assert_books_balance(engine)


def test_a_replayed_reversal_returns_the_first_answer_and_changes_nothing(uow_factory, queries, engine):
    acct = unique("acct")
    credit = execute_one(uow_factory, c.Credit(unique("r"), acct, 10, LotSource.PURCHASE, "purchase:p"),
                         caller="billing").receipt.transaction
    cmd = c.ReverseCredit(unique("r"), credit.transaction_id)
    first = execute_one(uow_factory, cmd, caller="billing")
    again = execute_one(uow_factory, cmd, caller="billing")
    assert again.replayed and again.receipt == first.receipt
    assert execute_one(uow_factory, cmd, caller="ads").error.reason == "CALLER_NOT_ALLOWED"
    assert q.get_balance(queries, acct, now()).available == 0
    assert_books_balance(engine)
