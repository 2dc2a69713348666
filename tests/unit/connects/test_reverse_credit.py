"""ReverseCredit (a chargeback's clawback) through the service layer with fakes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.connects.domain import commands as c
from services.connects.domain.model import LotSource, SpendReason, TransactionKind
from services.connects.service_layer import handlers, queries
from services.connects.service_layer.handlers import Envelope
from tests.conftest import unique
from tests.unit.connects.fakes import FakeLedgerStore

NOW = datetime(2026, 3, 1, tzinfo=UTC)


def run(store, cmd, caller="billing", now=NOW):
    (outcome,) = handlers.execute(store.uow(), [Envelope(cmd, caller)], now)
    return outcome


def purchase(store, account, amount):
    out = run(store, c.Credit(unique("r"), account, amount, LotSource.PURCHASE, "purchase:p1"))
    assert out.error is None
    return out.receipt.transaction


def spend(store, account, amount, at=NOW):
    out = run(store, c.Spend(unique("r"), account, amount, SpendReason.PROPOSAL, "job:j"), caller="operator", now=at)
    assert out.error is None


def test_reversing_an_unspent_purchase_removes_all_of_it_back_to_sales():
    store, acct = FakeLedgerStore(), unique("a")
    credit = purchase(store, acct, 40)
    out = run(store, c.ReverseCredit(unique("r"), credit.transaction_id))
    tx = out.receipt.transaction
    assert (tx.kind, tx.amount, out.receipt.already_spent) == (TransactionKind.REVERSAL, 40, 0)
    assert {p.ledger_account: p.amount for p in tx.postings} == {f"wallet:{acct}": -40, "system:sales": 40}
    assert tx.returned_transaction_id == credit.transaction_id
    assert queries.get_balance(store, acct, NOW).available == 0


def test_reversing_a_partly_spent_purchase_removes_only_the_unspent_remainder():
    store, acct = FakeLedgerStore(), unique("a")
    credit = purchase(store, acct, 40)
    spend(store, acct, 15)
    out = run(store, c.ReverseCredit(unique("r"), credit.transaction_id))
    assert (out.receipt.transaction.amount, out.receipt.already_spent) == (25, 15)
    assert queries.get_balance(store, acct, NOW).available == 0


def test_other_lots_of_the_wallet_are_not_touched():
    store, acct = FakeLedgerStore(), unique("a")
    run(store, c.Credit(unique("r"), acct, 10, LotSource.PLAN_GRANT), caller="operator",
        now=NOW - timedelta(days=1))  # older: spent first
    credit = purchase(store, acct, 20)
    spend(store, acct, 12)  # 10 from the grant, 2 from the purchase
    out = run(store, c.ReverseCredit(unique("r"), credit.transaction_id))
    assert (out.receipt.transaction.amount, out.receipt.already_spent) == (18, 2)
    assert queries.get_balance(store, acct, NOW).available == 0


def test_a_fully_spent_purchase_answers_nothing_removed_without_a_journal_entry():
    store, acct = FakeLedgerStore(), unique("a")
    credit = purchase(store, acct, 10)
    spend(store, acct, 10)
    out = run(store, c.ReverseCredit(unique("r"), credit.transaction_id))
    assert out.error is None
    assert out.receipt.transaction is None
    assert out.receipt.already_spent == 10
    kinds = [t.kind for t in store.transactions(acct, None, 50)]
    assert TransactionKind.REVERSAL not in kinds


def test_the_same_request_id_replays_and_a_second_reversal_is_refused():
    store, acct = FakeLedgerStore(), unique("a")
    credit = purchase(store, acct, 20)
    cmd = c.ReverseCredit(unique("r"), credit.transaction_id)
    first, again = run(store, cmd), run(store, cmd)
    assert again.replayed and again.receipt == first.receipt
    other = run(store, c.ReverseCredit(unique("r"), credit.transaction_id))
    assert other.error.reason == "ALREADY_REVERSED"


def test_only_billing_may_reverse_and_only_purchase_credits():
    store, acct = FakeLedgerStore(), unique("a")
    credit = purchase(store, acct, 20)
    assert run(store, c.ReverseCredit(unique("r"), credit.transaction_id), caller="ads").error.reason == \
        "CALLER_NOT_ALLOWED"
    grant = run(store, c.Credit(unique("r"), acct, 5, LotSource.PLAN_GRANT), caller="operator").receipt.transaction
    assert run(store, c.ReverseCredit(unique("r"), grant.transaction_id)).error.reason == \
        "TRANSACTION_NOT_REVERSIBLE"
    assert run(store, c.ReverseCredit(unique("r"), "nope")).error.reason == "TRANSACTION_NOT_FOUND"
