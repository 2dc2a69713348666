"""Reconcile on real PostgreSQL and Kafka against a real connects ledger (GetLedgerTotals): zero on clean
books, and each deliberately injected difference found and classified."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from adsmon.billing.v1 import billing_pb2
from adsmon.connects.v1 import connects_pb2 as pb

from services.billing.adapters.lookup import SqlAlchemyPurchaseLookup
from services.billing.adapters.revenue_tables import revenue_entries
from services.billing.service_layer.reconcile import Reconciler
from services.connects.client import GrpcConnectsClient
from tests.integration.billing.conftest import Connects, caught_up
from tests.unit.billing.revenue_fakes import FakeProvider, insert_purchase

pytestmark = [pytest.mark.integration]


class Billing:
    """What the money-in half would have done: purchase rows, ledger credits, provider payments."""

    def __init__(self, c: Connects, engine: sa.Engine, provider: FakeProvider) -> None:
        self.c, self.engine, self.provider = c, engine, provider
        self.stub = c.stub("billing")

    async def credit(self, account: str, connects: int, pid: str) -> pb.CreditResponse:
        return await self.stub.Credit(pb.CreditRequest(
            request_id=f"billing:purchase:{pid}:credit", account_id=account, amount=connects,
            source=pb.LOT_SOURCE_PURCHASE, reference=f"purchase:{pid}"))

    async def buy(self, connects: int = 20, *, credit: int | None = None, paid: int | None = None,
                  credited: bool = True, pay: bool = True) -> tuple[str, str]:
        pid, account = uuid.uuid4().hex[:16], f"acct-{uuid.uuid4().hex[:10]}"
        insert_purchase(self.engine, pid, account, connects, 15 * connects, at=datetime.now(UTC))
        if pay:
            self.provider.pay(pid, 15 * connects if paid is None else paid, datetime.now(UTC))
        if credited:
            await self.credit(account, credit or connects, pid)
        return pid, account


async def test_reconcile_reports_zero_on_clean_books_and_finds_each_injected_difference(
        connects, books_engine, start_consumer, auth_secret):
    start_consumer(connects)
    provider = FakeProvider()
    billing = Billing(connects, books_engine, provider)
    market = connects.stub("marketplace")
    clean = [await billing.buy(n) for n in (10, 40, 80)]
    for _, account in clean:
        await market.Spend(pb.SpendRequest(request_id=uuid.uuid4().hex, account_id=account, amount=7,
                                           reason=pb.SPEND_REASON_PROPOSAL, reference="job:j/proposal:p"))
    ledger = GrpcConnectsClient(connects.target, secret=auth_secret, caller="billing")
    reconciler = Reconciler(books_engine, ledger, SqlAlchemyPurchaseLookup(books_engine), provider,
                            clock=lambda: datetime.now(UTC))
    try:
        await caught_up(connects, books_engine)
        first = await asyncio.to_thread(reconciler.run, "clean-run")
        assert list(first.mismatches) == []
        assert first.accounts_checked == 3
        assert first.billing_purchased_connects == first.ledger_purchased_connects == 130

        missing, _ = await billing.buy(10, credited=False)
        differs, _ = await billing.buy(10, credit=12)
        ghost = uuid.uuid4().hex[:16]
        await billing.credit(f"acct-{uuid.uuid4().hex[:10]}", 10, ghost)
        unpaid, _ = await billing.buy(20, pay=False)
        underpaid, _ = await billing.buy(20, paid=299)
        provider.dispute(clean[1][0], 600, datetime.now(UTC))  # the provider lost a dispute; nothing clawed back
        await caught_up(connects, books_engine)
        with books_engine.begin() as conn:  # billing's books lose one recognition: its deferred is now off
            conn.execute(sa.delete(revenue_entries).where(
                revenue_entries.c.account_id == clean[0][1], revenue_entries.c.kind == "RECOGNISED"))
        second = await asyncio.to_thread(reconciler.run, "dirty-run")
    finally:
        ledger.close()
    found = sorted((billing_pb2.MismatchKind.Name(m.kind).removeprefix("MISMATCH_KIND_"), m.purchase_id)
                   for m in second.mismatches)
    assert found == sorted([
        ("MISSING_CREDIT", missing), ("AMOUNT_DIFFERS", differs), ("UNKNOWN_CREDIT", ghost),
        ("CREDIT_WITHOUT_PAYMENT", unpaid), ("PAYMENT_AMOUNT_DIFFERS", underpaid),
        ("CHARGEBACK_NOT_CLAWED_BACK", clean[1][0]), ("DEFERRED_DIFFERS", ""),
    ])
    deferred = next(m for m in second.mismatches if m.kind == billing_pb2.MISMATCH_KIND_DEFERRED_DIFFERS)
    assert deferred.billing_connects - deferred.ledger_connects == 7
