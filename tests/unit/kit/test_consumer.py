"""Idempotent consumer on SQLite with fake records and a fake DLQ producer."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from adsmon.events.v1.event_pb2 import DeadLetter, Event
from google.protobuf.wrappers_pb2 import Int64Value
from kafka import TopicPartition
from prometheus_client import REGISTRY
from sqlalchemy import exc as sa_exc

from services.kit.consumer import PROCESSED, IdempotentConsumer
from services.kit.db import make_engine
from services.kit.errors import FailedPrecondition, Unavailable
from services.kit.kafka import UndecodableEvent, decode_event, decode_payload, encode_event, make_event
from tests.conftest import metric
from tests.support.kafka import Rec

balances = sa.Table("balances", sa.MetaData(), sa.Column("account", sa.String, primary_key=True),
                    sa.Column("amount", sa.Integer, nullable=False))


class FakeFuture:
    def __init__(self, error=None):
        self.error = error

    def get(self, timeout=None):
        if self.error:
            raise self.error


class FakeDlqProducer:
    def __init__(self, failures: int = 0):
        self.sent: list[tuple[str, bytes, DeadLetter]] = []
        self.failures = failures

    def send(self, topic, key=None, value=None):
        if self.failures:
            self.failures -= 1
            return FakeFuture(TimeoutError("broker down"))
        self.sent.append((topic, key, DeadLetter.FromString(value)))
        return FakeFuture()

    def close(self, timeout=None):
        pass


@pytest.fixture
def engine(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path}/svc.db")
    PROCESSED.create(engine)
    balances.create(engine)
    yield engine
    engine.dispose()


def credit(conn, event, record):
    amount = decode_payload(event, [Int64Value]).value
    updated = conn.execute(balances.update().where(balances.c.account == event.aggregate_id)
                           .values(amount=balances.c.amount + amount)).rowcount
    if not updated:
        conn.execute(balances.insert().values(account=event.aggregate_id, amount=amount))


def balance(engine, account="acc") -> int | None:
    with engine.connect() as conn:
        return conn.execute(sa.select(balances.c.amount).where(balances.c.account == account)).scalar()


def record(event: Event | bytes, offset: int = 0, topic: str = "ledger") -> Rec:
    value = event if isinstance(event, bytes) else encode_event(event)
    return Rec(topic, 0, offset, b"acc", value)


def credited(amount: int, account: str = "acc") -> Event:
    return make_event(Int64Value(value=amount), account, "connects")


def make(engine, handler=credit, **kw) -> tuple[IdempotentConsumer, FakeDlqProducer]:
    dlq = kw.pop("dlq", None) or FakeDlqProducer()
    svc = f"svc-{uuid.uuid4().hex[:8]}"
    kw.setdefault("retry_initial", 0.001)
    c = IdempotentConsumer(engine, "unused:1", "group-a", ["ledger"], handler, service=svc,
                           dlq_producer=dlq, **kw)
    return c, dlq


def test_the_same_event_twice_is_applied_once(engine):
    c, _ = make(engine)
    e = credited(7)
    assert c.process(record(e, 0)) == "applied"
    assert c.process(record(e, 1)) == "duplicate"
    assert balance(engine) == 7
    assert metric("consumer_processed_total", service=c.service, topic="ledger", result="duplicate") == 1
    with engine.connect() as conn:
        row = conn.execute(sa.select(PROCESSED)).one()
    assert (row.consumer_group, row.event_id, row.offset) == ("group-a", e.event_id, 0)


def test_another_group_applies_the_same_event_on_its_own(engine):
    a, _ = make(engine)
    b = IdempotentConsumer(engine, "unused:1", "group-b", ["ledger"], lambda *_: None, service=a.service,
                           dlq_producer=FakeDlqProducer())
    e = credited(1)
    assert a.process(record(e)) == "applied"
    assert b.process(record(e)) == "applied"


def test_undecodable_bytes_are_dead_lettered_at_once_with_the_error_and_the_original_value(engine):
    calls = []
    c, dlq = make(engine, handler=lambda *a: calls.append(a))
    assert c.process(Rec("ledger", 2, 41, b"k", b"\xff\xfe garbage")) == "dead_lettered"
    assert calls == []
    [(topic, key, letter)] = dlq.sent
    assert (topic, key) == ("ledger.dlq", b"k")
    assert (letter.source_topic, letter.source_partition, letter.source_offset) == ("ledger", 2, 41)
    assert letter.value == b"\xff\xfe garbage" and letter.attempts == 0
    assert "UndecodableEvent" in letter.error and letter.consumer_group == "group-a"
    assert metric("consumer_dlq_total", service=c.service, topic="ledger") == 1


def test_a_handler_that_keeps_failing_is_dead_lettered_after_max_attempts(engine):
    calls = []

    def broken(conn, event, rec):
        calls.append(event.event_id)
        raise KeyError("bug in handler")

    c, dlq = make(engine, handler=broken, max_attempts=3)
    assert c.process(record(credited(1))) == "dead_lettered"
    assert len(calls) == 3
    assert dlq.sent[0][2].attempts == 3 and "KeyError" in dlq.sent[0][2].error
    assert metric("consumer_processed_total", service=c.service, topic="ledger", result="retried") == 2
    with engine.connect() as conn:  # a dead-lettered event may be re-published after a fix
        assert conn.execute(sa.select(sa.func.count()).select_from(PROCESSED)).scalar() == 0


def test_a_domain_error_is_dead_lettered_without_retries(engine):
    calls = []

    def refuse(conn, event, rec):
        calls.append(1)
        raise FailedPrecondition("INSUFFICIENT_CONNECTS", "no")

    c, dlq = make(engine, handler=refuse)
    assert c.process(record(credited(1))) == "dead_lettered"
    assert calls == [1] and dlq.sent[0][2].attempts == 1


def test_unknown_payload_type_is_permanent(engine):
    c, dlq = make(engine, handler=lambda conn, e, r: decode_payload(e, {}))
    assert c.process(record(credited(1))) == "dead_lettered"
    assert "unknown payload type" in dlq.sent[0][2].error


def test_a_failed_attempt_rolls_back_its_writes_and_a_retry_applies_once(engine):
    attempts = []

    def flaky(conn, event, rec):
        credit(conn, event, rec)
        attempts.append(1)
        if len(attempts) < 3:
            raise RuntimeError("transient")

    c, dlq = make(engine, handler=flaky, max_attempts=5)
    assert c.process(record(credited(10))) == "applied"
    assert balance(engine) == 10 and dlq.sent == []


def test_database_down_is_retried_past_max_attempts_and_never_dead_lettered(engine):
    failures = {"n": 6}

    def db_down(conn, event, rec):
        if failures["n"]:
            failures["n"] -= 1
            raise sa_exc.OperationalError("SELECT 1", {}, ConnectionRefusedError("db down"))
        credit(conn, event, rec)

    c, dlq = make(engine, handler=db_down, max_attempts=2)
    assert c.process(record(credited(3))) == "applied"
    assert balance(engine) == 3 and dlq.sent == []


def test_a_dependency_unavailable_is_retried_not_dead_lettered(engine):
    failures = {"n": 4}

    def dep_down(conn, event, rec):
        if failures["n"]:
            failures["n"] -= 1
            raise Unavailable("CONNECTS_UNAVAILABLE", "down")

    c, dlq = make(engine, handler=dep_down, max_attempts=2)
    assert c.process(record(credited(3))) == "applied"
    assert dlq.sent == []


def test_the_dead_letter_is_retried_until_kafka_takes_it(engine):
    c, dlq = make(engine, dlq=FakeDlqProducer(failures=3))
    assert c.process(record(b"junk")) == "dead_lettered"
    assert len(dlq.sent) == 1


class FakeKafkaConsumer:
    def __init__(self, batches):
        self.batches = list(batches)
        self.commits: list[dict] = []

    def poll(self, timeout_ms=0):
        if self.batches:
            return self.batches.pop(0)
        time.sleep(0.01)  # a real poll waits for records
        return {}

    def commit(self, offsets):
        self.commits.append({tp: om.offset for tp, om in offsets.items()})

    def assignment(self):
        return set()

    def partitions_for_topic(self, topic):
        return {0}

    def subscribe(self, topics):
        self.subscribed = list(topics)

    def close(self, autocommit=True):
        pass


def test_offsets_are_committed_after_the_effects_and_past_a_dead_letter(engine):
    c, dlq = make(engine)
    tp = TopicPartition("ledger", 0)
    recs = [record(credited(1), 0), record(b"junk", 1), record(credited(2), 2)]
    fake = FakeKafkaConsumer([{tp: recs}])
    c._consumer = fake
    assert c.poll_once() == 3
    assert fake.commits == [{tp: 3}]
    assert balance(engine) == 3 and len(dlq.sent) == 1


def test_a_commit_refused_during_a_rebalance_is_sent_again_with_the_next_for_partitions_still_owned(engine):
    from kafka.errors import RebalanceInProgressError

    c, _ = make(engine)
    tp0, tp1 = TopicPartition("ledger", 0), TopicPartition("ledger", 1)
    fake = FakeKafkaConsumer([{tp0: [record(credited(1), 0)], tp1: [record(credited(2), 0)]},
                              {}, {tp0: [record(credited(3), 1)]}])
    real_commit, refusals = fake.commit, [1]

    def refuse_once(offsets):
        if refusals:
            refusals.pop()
            raise RebalanceInProgressError("the group is rebalancing")
        real_commit(offsets)

    fake.commit = refuse_once
    fake.assignment = lambda: {tp0, tp1}
    c._consumer = fake
    assert c.poll_once() == 2 and fake.commits == []  # refused: kept
    assert c.poll_once() == 0 and fake.commits == [{tp0: 1, tp1: 1}]  # the next (idle) poll sends them
    assert c.poll_once() == 1 and fake.commits[-1] == {tp0: 2}
    # A refused commit whose partition moved away meanwhile is dropped, not sent.
    refusals.append(1)
    fake.batches = [{tp1: [record(credited(4), 1)]}, {tp0: [record(credited(5), 2)]}]
    assert c.poll_once() == 1
    fake.assignment = lambda: {tp0}
    assert c.poll_once() == 1 and fake.commits[-1] == {tp0: 3}
    assert balance(engine) == 15


def test_stopping_while_a_record_is_unresolved_does_not_commit_its_offset(engine):
    started = threading.Event()

    def db_down(conn, event, rec):
        if rec.offset == 1:
            started.set()
            raise sa_exc.OperationalError("x", {}, ConnectionRefusedError("db down"))
        credit(conn, event, rec)

    c, _ = make(engine, handler=db_down, retry_initial=0.05)
    tp = TopicPartition("ledger", 0)
    fake = FakeKafkaConsumer([{tp: [record(credited(1), 0), record(credited(2), 1)]}])
    c._consumer_factory = lambda: fake
    fake.subscribe = lambda topics: None
    fake.close = lambda autocommit=False: None
    c.start()
    assert started.wait(5)
    c.stop()
    assert fake.commits == [{tp: 1}]  # only the applied record; offset 1 is re-read on restart
    assert balance(engine) == 1


def test_decode_event_rejects_bytes_that_are_not_an_envelope():
    for junk in (b"", b"hello", b"\x0a\x00", encode_event(Event(event_id="x"))):
        with pytest.raises(UndecodableEvent):
            decode_event(junk)
    e = credited(5)
    assert decode_event(encode_event(e)) == e


def test_consumer_thread_stops_promptly(engine):
    c, _ = make(engine)
    fake = FakeKafkaConsumer([])
    fake.subscribe = lambda topics: None
    fake.close = lambda autocommit=False: None
    c._consumer_factory = lambda: fake
    c.start()
    time.sleep(0.1)
    t0 = time.monotonic()
    c.stop()
    assert time.monotonic() - t0 < 2 and not c.running


def test_purge_forgets_only_this_groups_ids_older_than_the_retention(engine):
    consumer, _ = make(engine)
    other = IdempotentConsumer(engine, "unused:1", "group-b", ["ledger"], credit, service=consumer.service,
                               dlq_producer=FakeDlqProducer())
    old, fresh = credited(1), credited(2)
    assert consumer.process(record(old, offset=0)) == "applied"
    assert consumer.process(record(fresh, offset=1)) == "applied"
    assert other.process(record(old, offset=0)) == "applied"
    now = datetime.now(UTC)
    assert consumer.purge(now=now + consumer.retention - timedelta(seconds=30)) == 0
    assert consumer.purge(now=now + consumer.retention + timedelta(seconds=5)) == 2
    # group-b still remembers its id; group-a has forgotten (that is why retention must exceed Kafka's).
    assert other.process(record(old, offset=1)) == "duplicate"
    assert consumer.process(record(old, offset=2)) == "applied"


def test_after_commit_runs_once_the_effect_is_durable_and_not_for_a_duplicate(engine):
    seen: list[int | None] = []
    c, _ = make(engine, after_commit=lambda: seen.append(balance(engine)))  # read on another connection
    e = credited(7)
    assert c.process(record(e, offset=0)) == "applied"
    assert seen == [7], "the hook saw the committed balance, so it ran after the commit"
    assert c.process(record(e, offset=1)) == "duplicate"
    assert seen == [7]


def test_after_commit_does_not_run_when_the_handler_fails(engine):
    calls: list[None] = []

    def refuse(conn, event, rec):
        raise FailedPrecondition("NO", "refused")

    c, dlq = make(engine, handler=refuse, after_commit=lambda: calls.append(None))
    assert c.process(record(credited(1))) == "dead_lettered"
    assert calls == [] and len(dlq.sent) == 1


def test_a_started_consumer_exports_its_dead_letter_count_from_zero(engine):
    """Alerts use increase(consumer_dlq_total): a series born at 1 would hide the first dead letter."""
    c, _ = make(engine)
    tp = TopicPartition("ledger", 0)
    c._consumer_factory = lambda: FakeKafkaConsumer([{tp: []}])
    assert REGISTRY.get_sample_value("consumer_dlq_total", {"service": c.service, "topic": "ledger"}) is None
    c.start()
    try:
        assert REGISTRY.get_sample_value("consumer_dlq_total", {"service": c.service, "topic": "ledger"}) == 0
    finally:
        c.stop()
