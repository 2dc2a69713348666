"""The broker fails midway: purchases still credit exactly once; their events wait in the outbox and reach
`billing.events.v1` once the broker is back, one PurchaseCompleted per purchase."""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from adsmon.billing.v1 import events_pb2
from kafka import KafkaConsumer
from kafka.errors import KafkaTimeoutError

from services.billing.adapters import topics
from services.billing.adapters.repository import BillingUnitOfWork
from services.billing.adapters.sandbox_provider import SandboxCore, SandboxPaymentProvider
from services.billing.adapters.topics import BILLING_EVENTS as BILLING_TOPIC
from services.billing.domain import commands
from services.billing.domain.purchase import PurchaseState
from services.billing.service_layer import purchases
from services.billing.service_layer.context import Context
from services.connects.client import GrpcConnectsClient
from services.kit import outbox
from services.kit.kafka import decode_event, decode_payload, ensure_topics, make_producer, service_topics
from tests.conftest import unique
from tests.e2e.billing_support import purchase_credits

pytestmark = pytest.mark.integration


class FlakyBroker:
    """A real producer that fails every send while `down` is set, as an unreachable broker would."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.down = threading.Event()

    def factory(self):  # type: ignore[no-untyped-def]
        if self.down.is_set():
            raise KafkaTimeoutError("broker unreachable (simulated)")
        producer = make_producer(self.bootstrap, client_id="billing-outbox-test")
        flaky = self

        class Producer:
            def send(self, *a, **k):  # type: ignore[no-untyped-def]
                if flaky.down.is_set():
                    raise KafkaTimeoutError("broker unreachable (simulated)")
                return producer.send(*a, **k)

            def flush(self, *a, **k):  # type: ignore[no-untyped-def]
                return producer.flush(*a, **k)

            def close(self, *a, **k):  # type: ignore[no-untyped-def]
                return producer.close(*a, **k)

        return Producer()


def backlog(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(outbox.OUTBOX)
                            .where(outbox.OUTBOX.c.published_at.is_(None))).scalar_one()


def completed_events(kafka_bootstrap: str, account: str) -> dict[str, set[str]]:
    """purchase_id -> event ids of its PurchaseCompleted on the topic."""
    topic = os.environ.get("ADSMON_KAFKA_TOPIC_PREFIX", "") + BILLING_TOPIC
    consumer = KafkaConsumer(topic, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, consumer_timeout_ms=5000)
    seen: dict[str, set[str]] = {}
    try:
        for record in consumer:
            if record.key != account.encode():
                continue
            event = decode_event(record.value)
            msg = decode_payload(event, {"adsmon.billing.v1.PurchaseCompleted": events_pb2.PurchaseCompleted})
            seen.setdefault(msg.purchase_id, set()).add(event.event_id)
    finally:
        consumer.close()
    return seen


def test_purchases_during_a_broker_outage_credit_once_and_publish_once_after(
        billing_engine, connects_process, auth_secret, kafka_bootstrap):
    prefix = os.environ.get("ADSMON_KAFKA_TOPIC_PREFIX", "")
    ensure_topics(kafka_bootstrap, {prefix + t: n for t, n in service_topics(topics.PRODUCES, ()).items()})
    broker = FlakyBroker(kafka_bootstrap)
    relay = outbox.OutboxRelay(billing_engine, kafka_bootstrap, service="billing", producer_factory=broker.factory,
                               backoff_initial=0.1, backoff_max=0.5, poll_interval=0.1,
                               topic_prefix=os.environ.get("ADSMON_KAFKA_TOPIC_PREFIX", ""))
    ledger = GrpcConnectsClient(connects_process.target, secret=auth_secret, caller="billing")
    provider = SandboxPaymentProvider(SandboxCore(webhook_delay=(0.0, 0.0)))
    ctx = Context(uow=lambda: BillingUnitOfWork(billing_engine, after_commit=relay.wake), provider=provider,
                  ledger=ledger, clock=lambda: datetime.now(UTC))
    account = unique("acct")
    relay.start()
    try:
        def buy(n: int) -> list[str]:
            return [purchases.purchase_connects(ctx, commands.PurchaseConnects(
                unique("r"), account, "pm_card_visa", quantity=3)).purchase_id for _ in range(n)]

        before = buy(3)
        deadline = time.monotonic() + 20
        while backlog(billing_engine) and time.monotonic() < deadline:
            time.sleep(0.1)
        broker.down.set()
        during = buy(7)
        time.sleep(1.0)  # the relay keeps failing and keeps the rows
        assert backlog(billing_engine) == 7
        assert all(purchases.get_purchase(ctx, p).state is PurchaseState.COMPLETED for p in during)
        broker.down.clear()
        deadline = time.monotonic() + 30
        while backlog(billing_engine) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert backlog(billing_engine) == 0
    finally:
        relay.stop()
        ledger.close()
    credits = purchase_credits(connects_process, auth_secret, account)
    assert sorted(c.reference for c in credits) == sorted(f"purchase:{p}" for p in before + during)
    events = completed_events(kafka_bootstrap, account)
    assert set(events) == set(before + during)
    assert all(len(ids) == 1 for ids in events.values())
