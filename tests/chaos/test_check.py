"""The checker's comparisons on small hand-made books (SQLite, the services' own table definitions)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from services.ads.adapters import tables as ads_tables
from services.billing.adapters import tables as billing_tables
from services.connects.adapters import tables as connects_tables
from tests.chaos.check import Report, check_ads, check_billing, check_ledger, purchase_credits

NOW = datetime(2026, 1, 5, tzinfo=UTC)


@pytest.fixture()
def ledger() -> Iterator[sa.Connection]:
    engine = sa.create_engine("sqlite://")
    connects_tables.metadata.create_all(engine)
    with engine.begin() as conn:
        yield conn
    engine.dispose()


def credit(conn: sa.Connection, tx: str, account: str, amount: int, *, reference: str = "signup") -> None:
    """A balanced credit: transaction, postings, lot and wallet, as the ledger writes them."""
    conn.execute(connects_tables.transactions.insert().values(
        transaction_id=tx, account_id=account, sequence=1, kind="CREDIT", amount=amount, source="PURCHASE",
        reference=reference, available_after=amount, held_after=0, occurred_at=NOW))
    conn.execute(connects_tables.postings.insert(), [
        {"transaction_id": tx, "ledger_account": f"wallet:{account}", "amount": amount},
        {"transaction_id": tx, "ledger_account": "system:issuance", "amount": -amount}])
    conn.execute(connects_tables.lots.insert().values(
        lot_id=f"lot-{tx}", account_id=account, source="PURCHASE", origin_source="PURCHASE", amount=amount,
        remaining=amount, held=0, expired=0, issued_at=NOW, expires_at=NOW))
    conn.execute(connects_tables.wallets.insert().values(
        account_id=account, available=amount, held=0, sequence=1, updated_at=NOW))


def hold(conn: sa.Connection, hold_id: str, status: str, resolutions: int) -> None:
    conn.execute(connects_tables.holds.insert().values(
        hold_id=hold_id, account_id="a", amount=5, captured=5 if status == "CAPTURED" else 0, reason="BOOST",
        reference="job:j", status=status, created_at=NOW, expires_at=NOW, allocations="[]"))
    for i in range(resolutions):
        conn.execute(connects_tables.transactions.insert().values(
            transaction_id=f"{hold_id}-r{i}", account_id="a", sequence=10 + i, kind="CAPTURE", amount=5,
            reference="job:j", hold_id=hold_id, available_after=0, held_after=0, occurred_at=NOW))


def test_balanced_books_have_no_discrepancy(ledger: sa.Connection) -> None:
    credit(ledger, "t1", "alice", 40)
    hold(ledger, "h1", "CAPTURED", 1)
    report = Report()
    check_ledger(ledger, report)
    assert report.discrepancies == []
    assert report.figures["ledger transactions"] == 2


def test_a_wallet_that_differs_from_its_lots_is_a_discrepancy(ledger: sa.Connection) -> None:
    credit(ledger, "t1", "alice", 40)
    ledger.execute(connects_tables.wallets.update().values(available=41))
    report = Report()
    check_ledger(ledger, report)
    assert report.discrepancies == ["ledger: wallets that differ from their lots or their postings"]


def test_unbalanced_postings_and_a_hold_resolved_twice_are_discrepancies(ledger: sa.Connection) -> None:
    credit(ledger, "t1", "alice", 40)
    ledger.execute(connects_tables.postings.update().where(
        connects_tables.postings.c.ledger_account == "system:issuance").values(amount=-39))
    hold(ledger, "h1", "CAPTURED", 2)
    hold(ledger, "h2", "RELEASED", 0)
    report = Report()
    check_ledger(ledger, report)
    assert report.discrepancies == ["ledger: postings sum to 1, not zero",
                                    "ledger: transactions whose postings do not sum to zero",
                                    "ledger: holds resolved more than once",
                                    "ledger: resolved holds without their capture or release"]


def test_purchases_are_compared_with_their_ledger_credits(ledger: sa.Connection) -> None:
    credit(ledger, "t1", "alice", 40, reference="purchase:p-ok")
    credit(ledger, "t2", "bob", 40, reference="purchase:p-twice")
    ledger.execute(connects_tables.transactions.insert().values(
        transaction_id="t3", account_id="bob", sequence=2, kind="CREDIT", amount=40, source="PURCHASE",
        reference="purchase:p-twice", available_after=80, held_after=0, occurred_at=NOW))
    credits = purchase_credits(ledger)
    engine = sa.create_engine("sqlite://")
    billing_tables.metadata.create_all(engine)
    with engine.begin() as conn:
        rows = [("p-ok", "COMPLETED"), ("p-twice", "COMPLETED"), ("p-never", "COMPLETED"), ("p-failed", "FAILED"),
                ("p-pending", "PENDING")]
        for purchase_id, state in rows:
            conn.execute(billing_tables.purchases.insert().values(
                purchase_id=purchase_id, request_id=f"r-{purchase_id}", fingerprint="f", account_id="alice",
                bundle_id="b", connects=40, amount_cents=600, currency="USD", payment_method="card", state=state,
                payment_status="CAPTURED", credit_request_id=f"c-{purchase_id}", created_at=NOW, updated_at=NOW))
        report = Report()
        check_billing(conn, credits, report)
    engine.dispose()
    assert sorted(report.discrepancies) == ["billing: completed purchases never credited",
                                            "billing: purchases credited more than once",
                                            "billing: purchases left pending"]
    assert report.figures["billing purchases completed"] == 3


def test_a_settled_step_whose_hold_is_still_open_is_a_discrepancy() -> None:
    engine = sa.create_engine("sqlite://")
    ads_tables.metadata.create_all(engine)
    with engine.begin() as conn:
        for bid, hold_id, action, status in [("b1", "h1", "CAPTURE", "DONE"), ("b2", "h2", "RELEASE", "DONE"),
                                             ("b3", "h3", "RELEASE", "PENDING")]:
            conn.execute(ads_tables.steps.insert().values(
                bid_id=bid, job_id="j", proposal_id=bid, freelancer_id="f", hold_id=hold_id, action=action,
                amount=5, status=status, attempts=0, next_attempt_at=NOW, created_at=NOW))
        report = Report()
        check_ads(conn, {"h1": ("CAPTURED", 5), "h2": ("OPEN", 0), "h3": ("OPEN", 0)}, report)
    engine.dispose()
    assert report.discrepancies == ["ads: settlement steps left pending",
                                    "ads: settled steps whose ledger hold does not match"]
