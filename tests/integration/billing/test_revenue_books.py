"""Revenue on real PostgreSQL and Kafka from a real connects ledger: the report ties out with the journal."""

from __future__ import annotations

import asyncio
import os
import random
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from adsmon.connects.v1 import connects_pb2 as pb
from google.protobuf.duration_pb2 import Duration
from kafka import KafkaConsumer
from prometheus_client import REGISTRY

from services.billing.adapters.lookup import SqlAlchemyPurchaseLookup
from services.billing.adapters.revenue_tables import revenue_entries, revenue_lots, revenue_transactions
from services.billing.adapters.topics import CONNECTS_LEDGER as LEDGER_TOPIC
from services.billing.service_layer import reports
from services.kit.kafka import make_producer
from services.kit.outbox import OUTBOX
from tests.conftest import unique
from tests.integration.billing.conftest import Connects, caught_up
from tests.integration.billing.ledger_figures import purchased_figures
from tests.unit.billing.revenue_fakes import count, insert_purchase

pytestmark = [pytest.mark.integration]

UNIT = 15


class Workload:
    """Random purchases, grants, spends of every product, holds captured or released, returns; time moves on."""

    def __init__(self, c: Connects, engine, seed: int) -> None:
        self.c, self.engine, self.rng = c, engine, random.Random(seed)
        self.billing, self.ads, self.market = c.stub("billing"), c.stub("ads"), c.stub("marketplace")
        self.accounts = [unique("acct") for _ in range(6)]
        self.returnable: list[str] = []

    async def buy(self, account: str) -> None:
        pid = uuid.uuid4().hex[:16]
        n = self.rng.choice([10, 20, 40, 60, 80, 7])
        insert_purchase(self.engine, pid, account, n, UNIT * n, at=self.c.clock())
        await self.billing.Credit(pb.CreditRequest(request_id=f"billing:purchase:{pid}:credit", account_id=account,
                                                   amount=n, source=pb.LOT_SOURCE_PURCHASE,
                                                   reference=f"purchase:{pid}"))

    async def grant(self, account: str) -> None:
        await self.billing.Credit(pb.CreditRequest(request_id=unique("grant"), account_id=account, amount=10,
                                                   source=pb.LOT_SOURCE_PLAN_GRANT, reference="membership:m/cycle:1"))

    async def op(self) -> None:
        account = self.rng.choice(self.accounts)
        available = (await self.market.GetBalance(pb.GetBalanceRequest(account_id=account))).available
        pick = self.rng.random()
        if pick < 0.12 and self.returnable:
            tx_id = self.returnable.pop(self.rng.randrange(len(self.returnable)))
            await self.market.ReturnConnects(pb.ReturnConnectsRequest(
                request_id=unique("ret"), spend_transaction_id=tx_id,
                reason=pb.RETURN_REASON_JOB_CANCELLED_BEFORE_CONTRACT))
            return
        if available == 0:
            return
        job = f"job:{uuid.uuid4().hex[:8]}/proposal:{uuid.uuid4().hex[:8]}"
        if pick < 0.45:
            r = await self.market.Spend(pb.SpendRequest(request_id=unique("s"), account_id=account,
                                                        amount=self.rng.randint(1, min(available, 16)),
                                                        reason=pb.SPEND_REASON_PROPOSAL, reference=job))
            self.returnable.append(r.transaction.transaction_id)
        elif pick < 0.7:
            held = self.rng.randint(1, min(available, 12))
            h = await self.ads.Hold(pb.HoldRequest(request_id=unique("h"), account_id=account, amount=held,
                                                   reason=pb.SPEND_REASON_BOOST, reference=job + "/boost",
                                                   ttl=Duration(seconds=3600)))
            if self.rng.random() < 0.7:
                r = await self.ads.CaptureHold(pb.CaptureHoldRequest(request_id=unique("c"), hold_id=h.hold_id,
                                                                     amount=self.rng.randint(1, held)))
                self.returnable.append(r.transaction.transaction_id)
            else:
                await self.ads.ReleaseHold(pb.ReleaseHoldRequest(request_id=unique("rel"), hold_id=h.hold_id))
        else:
            reason = self.rng.choice([pb.SPEND_REASON_BADGE, pb.SPEND_REASON_PROMOTED_PROFILE])
            await self.ads.Spend(pb.SpendRequest(request_id=unique("s"), account_id=account,
                                                 amount=self.rng.randint(1, min(available, 3)), reason=reason,
                                                 reference="badge:week" if reason == pb.SPEND_REASON_BADGE else
                                                 "campaign:c/click:k"))

    async def run(self) -> None:
        for account in self.accounts:
            await self.buy(account)
            await self.grant(account)
        for _ in range(50):
            await self.op()
        self.c.clock.offset += timedelta(days=200)
        for account in self.accounts[::2]:
            await self.buy(account)
        for _ in range(40):
            await self.op()
        self.c.clock.offset += timedelta(days=200)  # the first lots are past their year: the sweeper expires them
        for _ in range(20):
            await self.op()


async def ledger_says(c: Connects, accounts: list[str]) -> dict[str, object]:
    """Bought, spent by product (net of returns), expired and returned purchased Connects, from the journal."""
    stub = c.stub("billing")
    txs: list[pb.LedgerTransaction] = []
    for account in accounts:
        token = ""
        while True:
            page = await stub.ListTransactions(pb.ListTransactionsRequest(account_id=account, page_size=1000,
                                                                          page_token=token))
            txs.extend(page.transactions)
            token = page.next_page_token
            if not token:
                break
    bought, spent, expired = purchased_figures(txs)
    kinds = {t.kind for t in txs}
    return {"bought": bought, "spent": dict(spent), "expired": expired, "kinds": kinds, "count": len(txs)}


async def test_after_a_random_workload_the_revenue_report_equals_what_the_ledger_bought_spent_and_expired(
        connects, books_engine, start_consumer):
    start_consumer(connects)
    seed = int(os.environ.get("ADSMON_TEST_WORKLOAD_SEED") or random.randrange(2**32))
    print(f"workload seed {seed} (ADSMON_TEST_WORKLOAD_SEED={seed} runs it again)")
    work = Workload(connects, books_engine, seed=seed)
    started = datetime.now(UTC) - timedelta(days=1)
    await work.run()
    total = await caught_up(connects, books_engine)
    ledger = await ledger_says(connects, work.accounts)
    assert ledger["count"] == total
    assert {pb.TRANSACTION_KIND_EXPIRE, pb.TRANSACTION_KIND_RETURN, pb.TRANSACTION_KIND_CAPTURE} <= ledger["kinds"]
    report = reports.revenue_report(books_engine, SqlAlchemyPurchaseLookup(books_engine), started,
                                    connects.clock() + timedelta(days=1))
    bought, expired, spent = ledger["bought"], ledger["expired"], ledger["spent"]
    assert report.deferred_opening == 0
    assert report.cash_received == UNIT * bought
    assert {p: c for p, (c, _) in report.recognised.items() if c} == {p: n for p, n in spent.items() if n}
    assert {p: v for p, (_, v) in report.recognised.items()} == {p: UNIT * c for p, (c, _) in report.recognised.items()}
    assert (report.breakage_connects, report.breakage) == (expired, UNIT * expired)
    unspent = bought - sum(spent.values()) - expired
    assert report.deferred_closing == UNIT * unspent
    assert report.cash_received == report.recognised_total + report.breakage + report.deferred_closing


def duplicates(topic: str) -> float:
    return REGISTRY.get_sample_value("consumer_processed_total", {"service": "billing-it", "topic": topic,
                                                                  "result": "duplicate"}) or 0.0


async def test_a_replayed_ledger_stream_is_applied_once(connects, books_engine, start_consumer, kafka_bootstrap):
    first = start_consumer(connects)
    work = Workload(connects, books_engine, seed=7)
    for account in work.accounts[:3]:
        await work.buy(account)
    for _ in range(25):
        await work.op()
    total = await caught_up(connects, books_engine)
    state = [count(books_engine, t) for t in (revenue_transactions, revenue_lots, revenue_entries, OUTBOX)]
    report = reports.revenue_report(books_engine, SqlAlchemyPurchaseLookup(books_engine), connects.clock() -
                                    timedelta(days=1), connects.clock() + timedelta(days=1))
    topic = connects.prefix + LEDGER_TOPIC
    before = duplicates(topic)
    # Every record produced again (same event ids: a producer retry) ...
    reader = KafkaConsumer(topic, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest",
                           enable_auto_commit=False, consumer_timeout_ms=3000, group_id=None)
    copies = [(r.key, r.value) for r in reader]
    reader.close()
    assert len(copies) == total
    producer = make_producer(kafka_bootstrap, client_id="replay")
    for key, value in copies:
        producer.send(topic, key=key, value=value)
    producer.flush()
    producer.close()
    # ... and the whole topic read again by another group (a replay from the beginning).
    start_consumer(connects)
    deadline = time.monotonic() + 60
    while duplicates(topic) - before < 3 * total and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert duplicates(topic) - before == 3 * total
    assert [count(books_engine, t) for t in (revenue_transactions, revenue_lots, revenue_entries, OUTBOX)] == state
    assert first.applied_total == total
    assert reports.revenue_report(books_engine, SqlAlchemyPurchaseLookup(books_engine), report.start,
                                  report.end) == report
