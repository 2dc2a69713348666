"""Transactional outbox on SQLite with a fake producer: what is committed is relayed, in order, once."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from adsmon.events.v1.event_pb2 import Event
from google.protobuf.wrappers_pb2 import StringValue
from prometheus_client import REGISTRY

from services.kit import outbox
from services.kit.db import make_engine
from services.kit.kafka import make_event
from services.kit.outbox import OUTBOX, OutboxRelay, OutboxRow, SimulatedCrash, publishable


class FakeFuture:
    def __init__(self, error: Exception | None = None) -> None:
        self.error = error

    def get(self, timeout: float | None = None) -> None:
        if self.error:
            raise self.error


class FakeProducer:
    """Records what was sent; `fail` makes every send's future raise like an unreachable broker."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []
        self.fail = fail
        self.closed = False

    def send(self, topic, key=None, value=None, headers=None):
        if not self.fail:
            self.sent.append((topic, key, value))
        return FakeFuture(self.fail)

    def flush(self, timeout=None) -> None:
        pass

    def close(self, timeout=None) -> None:
        self.closed = True


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def engine(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path}/svc.db")
    OUTBOX.create(engine)
    yield engine
    engine.dispose()


def service_name() -> str:
    return f"svc-{uuid.uuid4().hex[:8]}"


def event(key: str, text: str) -> Event:
    return make_event(StringValue(value=text), key, "svc")


def unpublished(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).where(OUTBOX.c.published_at.is_(None))).scalar_one()


def test_rolled_back_transaction_leaves_nothing_to_publish(engine):
    producer = FakeProducer()
    with pytest.raises(RuntimeError), engine.begin() as conn:
        outbox.add(conn, "t", event("a", "never"))
        raise RuntimeError("state change failed")
    with engine.begin() as conn:
        outbox.add(conn, "t", event("a", "kept"))
    relay = OutboxRelay(engine, "unused:1", service=service_name(), producer_factory=lambda: producer)
    assert relay.run_once() == 1
    assert [Event.FromString(v).payload.value.endswith(b"kept") for _, _, v in producer.sent] == [True]


def test_relay_sends_rows_in_commit_order_keyed_by_aggregate_and_marks_them(engine):
    producer = FakeProducer()
    events = [event(key, f"{key}{i}") for i in range(3) for key in ("a", "b")]
    with engine.begin() as conn:
        outbox.add_many(conn, [("topic.x", e) for e in events])
    relay = OutboxRelay(engine, "unused:1", service=service_name(), producer_factory=lambda: producer)
    assert relay.run_once() == 6
    assert [(t, k) for t, k, _ in producer.sent] == [("topic.x", e.aggregate_id.encode()) for e in events]
    assert [Event.FromString(v).event_id for _, _, v in producer.sent] == [e.event_id for e in events]
    assert unpublished(engine) == 0
    assert relay.run_once() == 0
    assert len(producer.sent) == 6


def test_failed_send_keeps_rows_counts_the_error_and_a_later_pass_publishes_them(engine):
    svc = service_name()
    with engine.begin() as conn:
        outbox.add(conn, "t", event("a", "x"))
    broken = OutboxRelay(engine, "unused:1", service=svc,
                         producer_factory=lambda: FakeProducer(fail=TimeoutError("broker down")))
    with pytest.raises(TimeoutError):
        broken.run_once()
    assert unpublished(engine) == 1
    healthy = FakeProducer()
    relay = OutboxRelay(engine, "unused:1", service=svc, producer_factory=lambda: healthy)
    assert relay.run_once() == 1
    assert unpublished(engine) == 0


def test_crash_between_ack_and_mark_resends_the_rows_on_the_next_pass(engine):
    producer = FakeProducer()
    with engine.begin() as conn:
        outbox.add(conn, "t", event("a", "x"))

    def crash(rows):
        raise SimulatedCrash

    crashing = OutboxRelay(engine, "unused:1", service=service_name(),
                           producer_factory=lambda: producer, after_send=crash)
    with pytest.raises(SimulatedCrash):
        crashing.run_once()
    assert unpublished(engine) == 1
    OutboxRelay(engine, "unused:1", service=service_name(), producer_factory=lambda: producer).run_once()
    assert len(producer.sent) == 2 and producer.sent[0] == producer.sent[1]
    assert unpublished(engine) == 0


def rows(*spec: tuple[int, str]) -> list[OutboxRow]:
    now = datetime.now(UTC)
    return [OutboxRow(i, f"e{i}", "t", k, b"", now) for i, k in spec]


def test_publishable_never_overtakes_an_earlier_row_of_the_same_key_held_elsewhere():
    batch = rows((5, "a"), (6, "b"), (8, "a"), (9, "b"))
    # row 7 (key a) is unpublished but claimed by another relay; row 4 (key b) too.
    pending = [(5, "a"), (6, "b"), (7, "a"), (8, "a"), (9, "b")]
    assert [r.id for r in publishable(batch, [(k, i) for i, k in pending])] == [5, 6, 9]
    pending_b_blocked = [(4, "b"), *pending]
    assert [r.id for r in publishable(batch, [(k, i) for i, k in pending_b_blocked])] == [5]


def test_relay_thread_backs_off_while_kafka_is_down_and_resumes_by_itself(engine):
    svc = service_name()
    healthy = FakeProducer()
    state = {"down": True, "calls": 0}

    def factory():
        state["calls"] += 1
        if state["down"]:
            raise ConnectionError("NoBrokersAvailable")
        return healthy

    relay = OutboxRelay(engine, "unused:1", service=svc, producer_factory=factory,
                        poll_interval=0.05, backoff_initial=0.1, backoff_max=0.4, stats_interval=0.05)
    with engine.begin() as conn:
        outbox.add_many(conn, [("t", event("a", str(i))) for i in range(3)])
    relay.start()
    try:
        time.sleep(1.5)
        # 0.1 + 0.2 + 0.4 + 0.4 ... : a handful of attempts, not a busy loop.
        assert 3 <= state["calls"] <= 7
        assert metric("outbox_publish_errors_total", service=svc) == state["calls"]
        assert metric("outbox_backlog", service=svc) == 3
        assert metric("outbox_oldest_unpublished_age_seconds", service=svc) > 1.0
        assert unpublished(engine) == 3
        state["down"] = False
        deadline = time.monotonic() + 5
        while unpublished(engine) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert unpublished(engine) == 0
        assert len(healthy.sent) == 3
        assert metric("outbox_published_total", service=svc, topic="t") == 3
        assert metric("outbox_publish_lag_seconds_count", service=svc) == 3
        time.sleep(0.2)
        assert metric("outbox_backlog", service=svc) == 0
    finally:
        relay.stop()
    assert not relay.running


def test_wake_wakes_the_relay_long_before_its_poll_interval(engine):
    producer = FakeProducer()
    relay = OutboxRelay(engine, "unused:1", service=service_name(), producer_factory=lambda: producer,
                        poll_interval=30)
    relay.start()
    try:
        time.sleep(0.2)
        with engine.begin() as conn:
            outbox.add(conn, "t", event("a", "now"))
        started = time.monotonic()
        relay.wake()
        while not producer.sent and time.monotonic() - started < 5:
            time.sleep(0.01)
        assert producer.sent and time.monotonic() - started < 2
    finally:
        t0 = time.monotonic()
        relay.stop()
        assert time.monotonic() - t0 < 2
    assert producer.closed


def test_cleanup_deletes_only_rows_published_longer_ago_than_the_retention(engine):
    producer = FakeProducer()
    with engine.begin() as conn:
        outbox.add_many(conn, [("t", event("a", str(i))) for i in range(3)])
    relay = OutboxRelay(engine, "unused:1", service=service_name(), producer_factory=lambda: producer,
                        retention=timedelta(hours=1))
    relay.run_once()
    with engine.begin() as conn:
        outbox.add(conn, "t", event("a", "pending"))
        conn.execute(OUTBOX.update().where(OUTBOX.c.id == 1)
                     .values(published_at=datetime.now(UTC) - timedelta(hours=2)))
    assert relay.cleanup() == 1
    with engine.connect() as conn:
        left = conn.execute(sa.select(OUTBOX.c.id).order_by(OUTBOX.c.id)).scalars().all()
    assert left == [2, 3, 4]


def test_add_refuses_an_event_without_aggregate_id(engine):
    with pytest.raises(ValueError), engine.begin() as conn:
        outbox.add(conn, "t", Event(event_id="x"))


def test_make_event_packs_the_payload_and_names_its_type():
    e = make_event(StringValue(value="v"), "acc-1", "connects", causation_id="req-1")
    assert e.type == "google.protobuf.StringValue"
    assert uuid.UUID(e.event_id)
    assert (e.aggregate_id, e.producer, e.causation_id) == ("acc-1", "connects", "req-1")
    assert abs(e.occurred_at.ToDatetime(UTC) - datetime.now(UTC)) < timedelta(seconds=5)
    out = StringValue()
    assert e.payload.Unpack(out) and out.value == "v"
    with pytest.raises(ValueError):
        make_event(StringValue(), "", "connects")


def test_stop_is_safe_without_start_and_relay_cannot_start_twice(engine):
    relay = OutboxRelay(engine, "unused:1", service=service_name(), producer_factory=FakeProducer)
    relay.stop()
    relay.start()
    try:
        with pytest.raises(RuntimeError):
            relay.start()
    finally:
        relay.stop()
    assert not relay.running
