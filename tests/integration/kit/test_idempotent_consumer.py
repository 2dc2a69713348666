"""Idempotent consumer on real PostgreSQL and Kafka: once per event, bad records to the DLQ, no stalls."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import sqlalchemy as sa
from adsmon.events.v1.event_pb2 import DeadLetter, Event
from google.protobuf.wrappers_pb2 import Int64Value

from services.kit.consumer import PROCESSED, IdempotentConsumer
from services.kit.kafka import decode_payload, dlq_topic, encode_event, make_event, make_producer
from tests.conftest import metric, unique
from tests.integration.kit.support import balances, committed_offsets, end_offsets, read_topic, wait_for

pytestmark = pytest.mark.integration


def credit(conn, event: Event, record) -> None:
    amount = decode_payload(event, [Int64Value]).value
    done = conn.execute(balances.update().where(balances.c.account == event.aggregate_id)
                        .values(amount=balances.c.amount + amount)).rowcount
    if not done:
        conn.execute(balances.insert().values(account=event.aggregate_id, amount=amount))


def balance_of(engine, account: str) -> int | None:
    with engine.connect() as conn:
        return conn.execute(sa.select(balances.c.amount).where(balances.c.account == account)).scalar()


def produce(bootstrap: str, topic: str, items: list[tuple[bytes, bytes]]) -> None:
    """Send (key, value) pairs in order and wait for every ack."""
    producer = make_producer(bootstrap, client_id="kit-test")
    try:
        for future in [producer.send(topic, key=k, value=v) for k, v in items]:
            future.get(timeout=30)
    finally:
        producer.close()


def run_until(consumer: IdempotentConsumer, done: Callable[[], bool], what: str) -> None:
    consumer.start()
    try:
        wait_for(done, timeout=45, what=what)
    finally:
        consumer.stop()


def all_committed(bootstrap: str, group: str, topic: str) -> bool:
    return committed_offsets(bootstrap, group, topic) == end_offsets(bootstrap, topic)


def test_the_same_event_twice_on_the_topic_is_applied_once(engine, kafka, new_topic):
    topic = new_topic(partitions=1)
    event = make_event(Int64Value(value=25), "acc-dup", "kit-test")
    other = make_event(Int64Value(value=1), "acc-dup", "kit-test")
    produce(kafka, topic, [(b"acc-dup", encode_event(event)), (b"acc-dup", encode_event(event)),
                           (b"acc-dup", encode_event(other))])
    group, svc = unique("group"), unique("svc")
    consumer = IdempotentConsumer(engine, kafka, group, [topic], credit, service=svc)
    run_until(consumer, lambda: all_committed(kafka, group, topic), "offsets committed to the end")

    assert balance_of(engine, "acc-dup") == 26
    assert metric("consumer_processed_total", service=svc, topic=topic, result="applied") == 2
    assert metric("consumer_processed_total", service=svc, topic=topic, result="duplicate") == 1
    with engine.connect() as conn:
        rows = conn.execute(sa.select(PROCESSED.c.event_id, PROCESSED.c.offset)
                            .where(PROCESSED.c.consumer_group == group).order_by(PROCESSED.c.offset)).all()
    assert [tuple(r) for r in rows] == [(event.event_id, 0), (other.event_id, 2)]


def test_a_restarted_consumer_resumes_after_its_committed_offset_without_reapplying(engine, kafka, new_topic):
    topic = new_topic(partitions=1)
    first = [make_event(Int64Value(value=1), "acc-r", "kit-test") for _ in range(3)]
    produce(kafka, topic, [(b"acc-r", encode_event(e)) for e in first])
    group = unique("group")
    run_until(IdempotentConsumer(engine, kafka, group, [topic], credit, service=unique("svc")),
              lambda: all_committed(kafka, group, topic), "first run committed")
    produce(kafka, topic, [(b"acc-r", encode_event(make_event(Int64Value(value=10), "acc-r", "kit-test")))])
    svc = unique("svc")
    run_until(IdempotentConsumer(engine, kafka, group, [topic], credit, service=svc),
              lambda: all_committed(kafka, group, topic), "second run committed")
    assert balance_of(engine, "acc-r") == 13
    assert metric("consumer_processed_total", service=svc, topic=topic, result="applied") == 1
    assert metric("consumer_processed_total", service=svc, topic=topic, result="duplicate") == 0


def test_an_undecodable_record_goes_to_the_dlq_and_the_records_after_it_are_applied(engine, kafka, new_topic):
    topic = new_topic(partitions=1)
    before = make_event(Int64Value(value=5), "acc-p", "kit-test")
    after = make_event(Int64Value(value=7), "acc-p", "kit-test")
    garbage = b"\x00\xffthis is not an Event"
    produce(kafka, topic, [(b"acc-p", encode_event(before)), (b"acc-p", garbage),
                           (b"acc-p", encode_event(after))])
    group, svc = unique("group"), unique("svc")
    consumer = IdempotentConsumer(engine, kafka, group, [topic], credit, service=svc)
    run_until(consumer, lambda: all_committed(kafka, group, topic), "offsets committed past the bad record")

    assert balance_of(engine, "acc-p") == 12
    [letter_record] = read_topic(kafka, dlq_topic(topic))
    letter = DeadLetter.FromString(letter_record.value)
    assert letter_record.key == b"acc-p"
    assert (letter.source_topic, letter.source_partition, letter.source_offset) == (topic, 0, 1)
    assert letter.value == garbage and letter.key == b"acc-p"
    assert "UndecodableEvent" in letter.error and letter.consumer_group == group
    assert metric("consumer_dlq_total", service=svc, topic=topic) == 1
    assert metric("consumer_processed_total", service=svc, topic=topic, result="applied") == 2


def test_a_handler_that_keeps_failing_is_dead_lettered_after_max_attempts_and_the_partition_moves_on(
        engine, kafka, new_topic):
    topic = new_topic(partitions=1)
    poison = make_event(Int64Value(value=1000), "acc-f", "kit-test")
    fine = [make_event(Int64Value(value=i), "acc-f", "kit-test") for i in (1, 2)]
    produce(kafka, topic, [(b"acc-f", encode_event(e)) for e in (fine[0], poison, fine[1])])
    calls: list[str] = []

    def handler(conn, event, record):
        calls.append(event.event_id)
        credit(conn, event, record)  # its write must be rolled back with the failed attempt
        if event.event_id == poison.event_id:
            raise RuntimeError("downstream rejected amount 1000")

    group, svc = unique("group"), unique("svc")
    consumer = IdempotentConsumer(engine, kafka, group, [topic], handler, service=svc, max_attempts=3,
                                  retry_initial=0.05, lag_interval=0.0)
    run_until(consumer, lambda: all_committed(kafka, group, topic), "offsets committed past the poison")

    assert calls.count(poison.event_id) == 3
    assert balance_of(engine, "acc-f") == 3
    [letter_record] = read_topic(kafka, dlq_topic(topic))
    letter = DeadLetter.FromString(letter_record.value)
    assert letter.attempts == 3 and letter.source_offset == 1
    assert "RuntimeError: downstream rejected amount 1000" in letter.error
    assert Event.FromString(letter.value) == poison  # the original bytes, ready to re-publish
    assert metric("consumer_processed_total", service=svc, topic=topic, result="retried") == 2
    assert metric("consumer_processed_total", service=svc, topic=topic, result="dead_lettered") == 1
    assert metric("consumer_lag", service=svc, topic=topic, partition="0") == 0
