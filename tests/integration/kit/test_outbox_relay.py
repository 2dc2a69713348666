"""Outbox relay on real PostgreSQL and Kafka: nothing uncommitted goes out, nothing committed is lost."""

from __future__ import annotations

import threading
import time
from collections import defaultdict

import pytest
import sqlalchemy as sa
from adsmon.events.v1.event_pb2 import Event
from google.protobuf.wrappers_pb2 import Int64Value, StringValue
from prometheus_client import REGISTRY

from services.kit import outbox
from services.kit.consumer import IdempotentConsumer
from services.kit.kafka import decode_payload, make_event, make_producer
from services.kit.outbox import OUTBOX, OutboxRelay, SimulatedCrash
from tests.conftest import unique
from tests.integration.kit.support import balances, free_port, read_topic, wait_for

pytestmark = pytest.mark.integration


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def unpublished(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).where(OUTBOX.c.published_at.is_(None))).scalar_one()


def numbered(key: str, seq: int) -> Event:
    return make_event(Int64Value(value=seq), key, "kit-test")


def test_a_rolled_back_change_is_never_published(engine, kafka, new_topic):
    topic = new_topic()
    with pytest.raises(RuntimeError, match="business rule"), engine.begin() as conn:
        conn.execute(balances.insert().values(account="acc-1", amount=100))
        outbox.add(conn, topic, make_event(StringValue(value="uncommitted"), "acc-1", "kit-test"))
        raise RuntimeError("business rule failed after the outbox write")
    with engine.begin() as conn:
        outbox.add(conn, topic, make_event(StringValue(value="committed marker"), "acc-1", "kit-test"))

    relay = OutboxRelay(engine, kafka, service=unique("svc"))
    relay.start()
    try:
        wait_for(lambda: unpublished(engine) == 0, what="the marker to be published")
    finally:
        relay.stop()

    records = read_topic(kafka, topic)
    values = [decode_payload(Event.FromString(r.value), [StringValue]).value for r in records]
    assert values == ["committed marker"]
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(balances)).scalar() == 0
        assert conn.execute(sa.select(sa.func.count()).select_from(OUTBOX)).scalar() == 1


def test_commits_made_while_kafka_is_unreachable_are_all_delivered_in_order_per_key(engine, kafka, new_topic):
    topic = new_topic(partitions=3)
    svc = unique("svc")
    target = {"bootstrap": f"127.0.0.1:{free_port()}"}  # nothing listens there: the broker is "down"
    attempts = []

    def producer_factory():
        attempts.append(target["bootstrap"])
        return make_producer(target["bootstrap"], client_id=f"{svc}-outbox", bootstrap_timeout_ms=500)

    relay = OutboxRelay(engine, kafka, service=svc, producer_factory=producer_factory,
                        poll_interval=0.05, backoff_initial=0.2, backoff_max=1.0, stats_interval=0.2)
    relay.start()
    keys = [f"acc-{i}" for i in range(4)]
    try:
        for seq in range(15):  # 60 commits, one event each, interleaving keys
            for key in keys:
                with engine.begin() as conn:
                    conn.execute(sa.text("SELECT 1"))
                    outbox.add(conn, topic, numbered(key, seq))
                relay.wake()
        time.sleep(3)
        down_attempts = len(attempts)
        assert unpublished(engine) == 60, "rows must stay in the outbox while Kafka is down"
        assert metric("outbox_publish_errors_total", service=svc) >= 2
        assert down_attempts <= 12, f"{down_attempts} attempts in ~3s: backoff is not working"
        assert metric("outbox_backlog", service=svc) == 60
        assert metric("outbox_oldest_unpublished_age_seconds", service=svc) >= 2

        target["bootstrap"] = kafka  # the broker is back
        wait_for(lambda: unpublished(engine) == 0, timeout=30, what="the backlog to drain")
    finally:
        relay.stop()

    records = read_topic(kafka, topic)
    per_key: dict[str, list[int]] = defaultdict(list)
    partition_of: dict[str, set[int]] = defaultdict(set)
    for r in records:
        event = Event.FromString(r.value)
        assert r.key == event.aggregate_id.encode()
        per_key[event.aggregate_id].append(decode_payload(event, [Int64Value]).value)
        partition_of[event.aggregate_id].add(r.partition)
    assert dict(per_key) == {key: list(range(15)) for key in keys}  # every one, once, in order
    assert all(len(parts) == 1 for parts in partition_of.values())
    assert metric("outbox_published_total", service=svc, topic=topic) == 60
    assert metric("outbox_publish_lag_seconds_count", service=svc) == 60


def test_a_relay_killed_between_ack_and_mark_resends_and_the_consumer_applies_once(engine, kafka, new_topic):
    topic = new_topic()
    events = [make_event(Int64Value(value=amount), f"acc-{amount % 2}", "kit-test") for amount in (1, 2, 3, 4)]
    with engine.begin() as conn:
        outbox.add_many(conn, [(topic, e) for e in events])

    def crash(rows):
        raise SimulatedCrash("killed after Kafka acked, before the rows were marked")

    crashed = OutboxRelay(engine, kafka, service=unique("svc"), after_send=crash)
    with pytest.raises(SimulatedCrash):
        crashed.run_once()
    crashed.stop()
    assert unpublished(engine) == 4

    restarted = OutboxRelay(engine, kafka, service=unique("svc"))
    assert restarted.run_once() == 4
    restarted.stop()
    assert unpublished(engine) == 0
    assert len(read_topic(kafka, topic)) == 8  # every event is on the topic twice

    def credit(conn, event, record):
        amount = decode_payload(event, [Int64Value]).value
        done = conn.execute(balances.update().where(balances.c.account == event.aggregate_id)
                            .values(amount=balances.c.amount + amount)).rowcount
        if not done:
            conn.execute(balances.insert().values(account=event.aggregate_id, amount=amount))

    svc = unique("svc")
    consumer = IdempotentConsumer(engine, kafka, unique("group"), [topic], credit, service=svc)
    consumer.start()
    try:
        wait_for(lambda: metric("consumer_processed_total", service=svc, topic=topic, result="duplicate") == 4,
                 what="the 4 re-sent copies to be seen")
    finally:
        consumer.stop()
    with engine.connect() as conn:
        got = dict(conn.execute(sa.select(balances.c.account, balances.c.amount)).all())
    assert got == {"acc-0": 2 + 4, "acc-1": 1 + 3}
    assert metric("consumer_processed_total", service=svc, topic=topic, result="applied") == 4


def test_two_relays_on_postgres_never_break_per_key_order(engine, kafka, new_topic):
    topic = new_topic(partitions=3)
    keys = [f"job-{i}" for i in range(5)]
    with engine.begin() as conn:
        outbox.add_many(conn, [(topic, numbered(key, seq)) for seq in range(60) for key in keys])
    svc = unique("svc")
    sent_by: dict[int, int] = defaultdict(int)
    lock = threading.Lock()

    def counter(i: int):
        def count(rows):
            with lock:
                sent_by[i] += len(rows)
        return count

    relays = [OutboxRelay(engine, kafka, service=svc, batch_size=25, poll_interval=0.01,
                          after_send=counter(i)) for i in range(2)]
    for relay in relays:
        relay.start()
    try:
        wait_for(lambda: unpublished(engine) == 0, timeout=60, what="both relays to drain 300 rows")
    finally:
        for relay in relays:
            relay.stop()

    per_key: dict[str, list[int]] = defaultdict(list)
    for r in read_topic(kafka, topic):
        event = Event.FromString(r.value)
        per_key[event.aggregate_id].append(decode_payload(event, [Int64Value]).value)
    assert dict(per_key) == {key: list(range(60)) for key in keys}
    assert sum(sent_by.values()) == 300
