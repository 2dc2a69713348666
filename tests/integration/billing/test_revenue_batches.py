"""The revenue consumer's batches on real PostgreSQL and Kafka: a poison record, a failure mid-batch, a replay.

The ledger events are produced straight to a private topic (the bench's workload: purchases, grants, spends
from mixed lots, a capture, a return, an expiry); what the books must show is computed from those events here,
independently of the books' code: every purchased Connect costs 15 cents, so recognised revenue is 15 x the
purchased Connects spent (net of returns), breakage 15 x those expired.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, timedelta

import pytest
from adsmon.events.v1.event_pb2 import DeadLetter
from kafka import KafkaConsumer

from services.billing.adapters.lookup import SqlAlchemyPurchaseLookup
from services.billing.adapters.revenue_repository import BooksRepository
from services.billing.adapters.revenue_tables import revenue_entries, revenue_lots, revenue_transactions
from services.billing.adapters.topics import CONNECTS_LEDGER as LEDGER_TOPIC
from services.billing.entrypoints.revenue_consumer import RevenueConsumer
from services.billing.service_layer import reports
from services.kit.consumer import PROCESSED
from services.kit.db import make_engine
from services.kit.kafka import dlq_topic, encode_event, ensure_topics, make_event, make_producer
from services.kit.outbox import OUTBOX
from tests.conftest import unique
from tests.integration.billing.ledger_figures import purchased_figures
from tests.load.billing.bench_revenue import T0, account_events
from tests.unit.billing.revenue_fakes import Ledger, count, insert_purchase, migrate_books

pytestmark = [pytest.mark.integration]

UNIT = 15
ACCOUNTS = 30


@pytest.fixture
def books(create_database):
    engine = make_engine(create_database("billing_batches"), pool_size=4)
    migrate_books(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def topic(kafka_bootstrap):
    prefix = unique("batches") + "."
    ensure_topics(kafka_bootstrap, {prefix + LEDGER_TOPIC: 3, dlq_topic(prefix + LEDGER_TOPIC): 1})
    return prefix


def workload(engine):
    ledger, msgs = Ledger(), []
    for i in range(ACCOUNTS):
        events, purchases = account_events(ledger, i)
        msgs.extend(events)
        for pid, account, connects in purchases:
            insert_purchase(engine, pid, account, connects, UNIT * connects)
    return msgs


def expected(msgs) -> dict[str, object]:
    """The report's figures from the ledger events alone."""
    bought, spent, expired = purchased_figures(msgs)
    return {"cash": UNIT * bought, "recognised": {p: UNIT * n for p, n in spent.items() if n},
            "breakage": UNIT * expired, "deferred": UNIT * (bought - sum(spent.values()) - expired)}


def report_of(engine) -> dict[str, object]:
    r = reports.revenue_report(engine, SqlAlchemyPurchaseLookup(engine), T0 - timedelta(days=1),
                               T0 + timedelta(days=2))
    return {"cash": r.cash_received, "recognised": {p: v for p, (_, v) in r.recognised.items() if v},
            "breakage": r.breakage, "deferred": r.deferred_closing}


def books_state(engine) -> tuple[int, ...]:
    with engine.connect() as conn:
        deferred = BooksRepository(conn).deferred()
    return (*[count(engine, t) for t in (revenue_transactions, revenue_lots, revenue_entries, OUTBOX)], *deferred)


def produce(bootstrap: str, topic: str, msgs, extra: list[tuple[bytes, bytes]] = ()) -> None:
    producer = make_producer(bootstrap, client_id="batches-test")
    for m in msgs:
        event = make_event(m, m.account_id, "connects", occurred_at=m.occurred_at.ToDatetime(tzinfo=UTC))
        producer.send(topic, key=m.account_id.encode(), value=encode_event(event))
    for key, value in extra:
        producer.send(topic, key=key, value=value)
    producer.flush()
    producer.close()


def consume(engine, bootstrap: str, prefix: str, want: int, group: str | None = None, **options) -> RevenueConsumer:
    """A consumer that has resolved `want` records (applied, duplicate or dead-lettered), then stopped."""
    consumer = RevenueConsumer(engine, bootstrap, group or unique("revenue"), [LEDGER_TOPIC], service="billing-batches",
                               topic_prefix=prefix, poll_timeout_ms=200, retry_initial=0.01, **options)
    consumer.start()
    try:
        deadline = time.monotonic() + 90
        while consumer.resolved_total < want and time.monotonic() < deadline:
            time.sleep(0.05)
        assert consumer.resolved_total >= want, f"resolved {consumer.resolved_total} of {want} records"
    finally:
        consumer.stop()
    return consumer


def dead_letters(bootstrap: str, topic: str) -> list[DeadLetter]:
    reader = KafkaConsumer(dlq_topic(topic), bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                           enable_auto_commit=False, consumer_timeout_ms=3000, group_id=None)
    letters = []
    for r in reader:
        letter = DeadLetter()
        letter.ParseFromString(r.value)
        letters.append(letter)
    reader.close()
    return letters


def test_a_poison_record_in_a_batch_is_dead_lettered_with_its_error_and_the_rest_applied(
        books, topic, kafka_bootstrap):
    msgs = workload(books)
    # A record that is no event, one whose ids the books cannot hold, and one that breaks the batch in the
    # database: a second PURCHASE credit of an existing lot (its revenue_lots row is a conflict).
    ledger = Ledger()
    too_long = ledger.credit("acct-x", 5, lot="L" * 80, purchase_id="p0a", at=T0)
    clash = ledger.credit("acct-0", 5, lot="acct-0-P1", purchase_id="p0a", at=T0 + timedelta(hours=20),
                          tx_id=uuid.uuid4().hex)
    bad = [(b"acct-9", b"\xff\x00 not an event"), *[
        (m.account_id.encode(), encode_event(make_event(m, m.account_id, "connects"))) for m in (too_long, clash)]]
    produce(kafka_bootstrap, topic + LEDGER_TOPIC, msgs, bad)
    consumer = consume(books, kafka_bootstrap, topic, len(msgs) + len(bad), max_attempts=2)

    letters = dead_letters(kafka_bootstrap, topic + LEDGER_TOPIC)
    errors = sorted(letter.error for letter in letters)
    assert len(letters) == 3
    assert any("not an adsmon.events.v1.Event" in e for e in errors)
    assert any("id missing or too long" in e for e in errors)
    assert any("revenue_lots" in e or "IntegrityError" in e for e in errors)
    assert consumer.applied_total == len(msgs)
    assert count(books, revenue_transactions) == len(msgs)
    assert report_of(books) == expected(msgs)


def test_a_failure_after_part_of_a_batch_rolls_it_back_and_each_event_is_applied_once(
        books, topic, kafka_bootstrap, monkeypatch):
    msgs = workload(books)
    produce(kafka_bootstrap, topic + LEDGER_TOPIC, msgs)
    real_save = BooksRepository.save
    failures = []

    def save_then_fail(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        real_save(self, *args, **kwargs)  # the batch's rows are written in the open transaction ...
        if not failures:
            failures.append(1)
            raise RuntimeError("crash after part of the batch")  # ... and then it fails before the commit

    monkeypatch.setattr(BooksRepository, "save", save_then_fail)
    group = unique("revenue")
    consumer = consume(books, kafka_bootstrap, topic, len(msgs), group=group)
    assert failures == [1]
    assert consumer.applied_total == len(msgs)
    assert count(books, revenue_transactions) == count(books, PROCESSED) == len(msgs)
    assert report_of(books) == expected(msgs)


def test_a_consumer_that_stops_before_committing_offsets_reapplies_nothing_after_a_restart(
        books, topic, kafka_bootstrap, monkeypatch):
    msgs = workload(books)
    produce(kafka_bootstrap, topic + LEDGER_TOPIC, msgs)
    group = unique("revenue")
    # First run: the books commit, the Kafka offsets never do (as if the process died in between).
    monkeypatch.setattr(RevenueConsumer, "_commit", lambda self, offsets: None)
    first = consume(books, kafka_bootstrap, topic, len(msgs), group=group)
    state = books_state(books)
    monkeypatch.undo()
    # Restarted in the same group: every record comes again, and every one is a duplicate.
    again = consume(books, kafka_bootstrap, topic, len(msgs), group=group)
    assert first.applied_total == len(msgs) and again.applied_total == 0
    assert books_state(books) == state
    assert report_of(books) == expected(msgs)


def test_replaying_the_whole_topic_changes_nothing_and_the_report_ties_to_the_ledger(
        books, topic, kafka_bootstrap):
    msgs = workload(books)
    produce(kafka_bootstrap, topic + LEDGER_TOPIC, msgs)
    first = consume(books, kafka_bootstrap, topic, len(msgs))
    state, report = books_state(books), report_of(books)
    replay = consume(books, kafka_bootstrap, topic, len(msgs))  # another group: the whole topic again
    assert first.applied_total == len(msgs) and replay.applied_total == 0
    assert books_state(books) == state and report_of(books) == report == expected(msgs)
    assert report["cash"] == report["deferred"] + report["breakage"] + sum(report["recognised"].values())


def test_two_consumers_in_one_group_with_a_rebalance_midway_apply_each_event_once(
        books, topic, kafka_bootstrap, monkeypatch):
    """Two billing replicas: the second joins while the first is mid-backlog (a rebalance moves partitions,
    with a batch in flight); together they apply every event once and the report ties to the ledger."""
    from services.billing.entrypoints import revenue_consumer as module
    real = module.apply_ledger_batch

    def slowly(conn, items, **kw):  # ~12 s for the backlog alone: the second member has time to join (a few s)
        time.sleep(0.2)
        return real(conn, items, **kw)

    monkeypatch.setattr(module, "apply_ledger_batch", slowly)
    ledger, msgs = Ledger(), []
    for i in range(300):  # 3,000 events: many small batches on each side of the rebalance
        events, purchases = account_events(ledger, i)
        msgs.extend(events)
        for pid, account, connects in purchases:
            insert_purchase(books, pid, account, connects, UNIT * connects)
    produce(kafka_bootstrap, topic + LEDGER_TOPIC, msgs)
    group = unique("revenue-replicas")
    members = [RevenueConsumer(books, kafka_bootstrap, group, [LEDGER_TOPIC], service="billing-replicas",
                               topic_prefix=topic, poll_timeout_ms=200, retry_initial=0.01, max_poll_records=50)
               for _ in range(2)]
    members[0].start()
    try:
        deadline = time.monotonic() + 60
        while members[0].resolved_total < 300 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert 0 < members[0].resolved_total < len(msgs), "the second member must join midway"
        members[1].start()
        deadline = time.monotonic() + 90
        while sum(m.applied_total for m in members) < len(msgs) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        for m in members:
            m.stop()
    assert [m.applied_total > 0 for m in members] == [True, True]
    assert sum(m.applied_total for m in members) == len(msgs)
    assert count(books, PROCESSED) == len(msgs)
    assert report_of(books) == expected(msgs)
