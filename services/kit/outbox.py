"""Transactional outbox: events are rows written with the state change, then relayed to Kafka.

A service calls `add(conn, topic, event)` inside the transaction that changes
its state, so an event exists if and only if that transaction committed.
`OutboxRelay` (a `kit.worker.Worker`: one background thread per process) publishes unpublished rows
in id order with an idempotent acks=all producer, waits for the acks, then
marks them published. A crash between the ack and the mark re-sends the rows
on restart; consumers de-duplicate on event_id. Kafka being down only delays:
rows stay until acknowledged.

Wiring a service:

    versions/000N_outbox.py: kit.migrations.create_outbox_table()   # the service's Alembic revision
    relay = kit.bootstrap.outbox_relay(config, engine)   # topics in the configured namespace
    uow = MyUnitOfWork(engine, after_commit=relay.wake)   # uow.publish(topic, event) -> outbox.add
    App(..., components=[relay, ...])                     # serve() starts and stops it
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from adsmon.events.v1.event_pb2 import Event
from kafka import KafkaProducer
from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy.engine import Connection, Engine

from services.kit import bulk
from services.kit.db import is_postgres
from services.kit.kafka import MAX_ID_LENGTH, close_quietly, encode_event, make_producer
from services.kit.worker import Worker

log = logging.getLogger(__name__)

TABLE_NAME = "outbox"

backlog_gauge = Gauge("outbox_backlog", "Outbox rows committed but not yet acknowledged by Kafka.",
                      ["service"])
oldest_age_gauge = Gauge("outbox_oldest_unpublished_age_seconds",
                         "Age of the oldest unpublished outbox row (0 when the outbox is empty).",
                         ["service"])
published_total = Counter("outbox_published_total", "Outbox events acknowledged by Kafka.",
                          ["service", "topic"])
publish_errors_total = Counter("outbox_publish_errors_total",
                               "Failed relay attempts (Kafka or database); rows are kept and retried.",
                               ["service"])
publish_lag = Histogram("outbox_publish_lag_seconds",
                        "Time from the outbox row's creation to Kafka's acknowledgement.", ["service"],
                        buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600))


def outbox_table(metadata: sa.MetaData) -> sa.Table:
    """The outbox table in `metadata`. `id` gives the publishing order; `key` is the aggregate id."""
    table = sa.Table(
        TABLE_NAME, metadata,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
                  autoincrement=True),
        sa.Column("event_id", sa.String(MAX_ID_LENGTH), nullable=False, unique=True),
        sa.Column("topic", sa.String(249), nullable=False),
        sa.Column("key", sa.String(MAX_ID_LENGTH), nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sqlite_autoincrement=True,  # never reuse ids: they are the publishing order
    )
    unpublished = table.c.published_at.is_(None)
    # Partial indexes stay as small as the backlog, however many published rows are kept.
    sa.Index("ix_outbox_unpublished", table.c.id,
             postgresql_where=unpublished, sqlite_where=unpublished)
    sa.Index("ix_outbox_unpublished_key", table.c.key, table.c.id,
             postgresql_where=unpublished, sqlite_where=unpublished)
    sa.Index("ix_outbox_published_at", table.c.published_at)
    return table


OUTBOX = outbox_table(sa.MetaData())


def add(conn: Connection, topic: str, event: Event) -> None:
    """Queue `event` for `topic` in the caller's transaction (Kafka key = event.aggregate_id)."""
    add_many(conn, [(topic, event)])


def add_many(conn: Connection, items: Iterable[tuple[str, Event]]) -> None:
    """Queue several events in the caller's transaction, in the given order."""
    rows = outbox_rows(items)
    if not rows:
        return
    if is_postgres(conn):
        bulk.pg_insert_rows(conn, OUTBOX, rows)  # one statement for the lot (executemany: one per row)
    else:
        conn.execute(OUTBOX.insert(), rows)


def outbox_rows(items: Iterable[tuple[str, Event]]) -> list[dict[str, Any]]:
    """The OUTBOX rows that queue `items`, in order (`add_many`'s; for a caller batching its own statements)."""
    now = datetime.now(UTC)
    rows = []
    for topic, event in items:
        if not topic:
            raise ValueError("topic is required")
        if not event.event_id or not event.aggregate_id:
            raise ValueError("event_id and aggregate_id are required (build events with make_event)")
        rows.append({"event_id": event.event_id, "topic": topic, "key": event.aggregate_id,
                     "payload": encode_event(event), "created_at": now})
    return rows


def _utc(value: datetime) -> datetime:
    # SQLite hands datetimes back naive; we always store UTC.
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@dataclass(frozen=True)
class OutboxRow:
    id: int
    event_id: str
    topic: str
    key: str
    payload: bytes
    created_at: datetime


def publishable(batch: Sequence[OutboxRow], pending: Iterable[tuple[str, int]]) -> list[OutboxRow]:
    """The rows of `batch` that may be sent now without breaking per-key order.

    `pending` lists (key, id) of every unpublished row with those keys up to the
    batch's last id. For each key we keep the batch's rows only until the first
    pending row of that key that is not ours (another relay holds it, or it is
    beyond our claim): sending past it would overtake it.
    """
    ours = {row.id for row in batch}
    blocked_after: dict[str, int] = {}
    for key, row_id in sorted(pending, key=lambda kv: kv[1]):
        if row_id not in ours and key not in blocked_after:
            blocked_after[key] = row_id
    return [row for row in batch if row.id < blocked_after.get(row.key, row.id + 1)]


class SimulatedCrash(Exception):
    """Raised by a test's `after_send` hook to stop the relay between the acks and the mark."""


class OutboxRelay(Worker):
    """Publishes committed outbox rows to Kafka from one background thread (a `kit.worker.Worker`).

    Safe to run in several replicas on PostgreSQL: rows are claimed with
    FOR UPDATE SKIP LOCKED and a key's rows are never sent past an earlier row of
    the same key that another relay holds. On SQLite (one process) the rows
    are read and marked in two short transactions so the single writer lock is
    never held while waiting for Kafka. `wake()` after a commit publishes at
    once instead of at the next poll.
    """

    def __init__(
        self, engine: Engine, bootstrap: str, *, service: str,
        producer_factory: Callable[[], KafkaProducer] | None = None,
        batch_size: int = 200, poll_interval: float = 0.5,
        backoff_initial: float = 0.5, backoff_max: float = 30.0,
        ack_timeout: float = 30.0, retention: timedelta = timedelta(days=1),
        cleanup_interval: float = 60.0, stats_interval: float = 5.0,
        after_send: Callable[[list[OutboxRow]], None] | None = None, topic_prefix: str = "",
    ) -> None:
        super().__init__("outbox-relay", service=service, interval=poll_interval,
                         error_backoff_initial=backoff_initial, error_backoff_max=backoff_max, stop_timeout=10.0)
        self.engine = engine
        self._producer_factory = producer_factory or (
            lambda: make_producer(bootstrap, client_id=f"{service}-outbox"))
        self.batch_size = batch_size
        self.ack_timeout = ack_timeout
        self.retention = retention
        self.cleanup_interval = cleanup_interval
        self.stats_interval = stats_interval
        self._after_send = after_send
        # Rows keep logical topic names; the prefix (an environment's namespace on a shared cluster)
        # is applied only on the wire.
        self.topic_prefix = topic_prefix
        self._producer: KafkaProducer | None = None
        self._next_cleanup = 0.0
        self._next_stats = 0.0

    # -- lifecycle (kit.worker.Worker) -------------------------------------------------------

    def stop(self, timeout: float | None = None) -> None:
        """Finish the batch in flight, then close the producer. Unsent rows stay for next time."""
        super().stop(timeout)
        self._close_producer()

    def teardown(self) -> None:
        self._close_producer()

    def has_more(self, result: Any) -> bool:
        return bool(result >= self.batch_size)  # a full batch means more is waiting: go again at once

    def on_error(self, exc: Exception) -> None:
        publish_errors_total.labels(self.service).inc()
        self._close_producer()  # a fresh producer after an outage: no stale idempotence state
        try:
            self.refresh_metrics()
        except Exception:  # the database may be the thing that is down
            log.debug("outbox metrics refresh failed", exc_info=True)

    # -- one pass ----------------------------------------------------------------------------

    def run_once(self) -> int:
        """Publish at most one batch, then the periodic upkeep; return how many rows were acknowledged and marked.

        Raises on Kafka or database failure (rows are then left unpublished).
        """
        if is_postgres(self.engine):
            with self.engine.begin() as conn:
                batch = self._claim(conn, lock=True)
                if batch:
                    self._send(batch)
                    self._mark(conn, batch)
        else:
            with self.engine.begin() as conn:
                batch = self._claim(conn, lock=False)
            if batch:
                self._send(batch)
                with self.engine.begin() as conn:
                    self._mark(conn, batch)
        if batch:
            self._on_success(batch)
        self._maintenance()
        return len(batch)

    def _claim(self, conn: Connection, *, lock: bool) -> list[OutboxRow]:
        t = OUTBOX.c
        query = (sa.select(t.id, t.event_id, t.topic, t.key, t.payload, t.created_at)
                 .where(t.published_at.is_(None)).order_by(t.id).limit(self.batch_size))
        if lock:
            query = query.with_for_update(skip_locked=True)
        batch = [OutboxRow(r.id, r.event_id, r.topic, r.key, bytes(r.payload), _utc(r.created_at))
                 for r in conn.execute(query)]
        if not batch or not lock:
            return batch
        keys = sorted({row.key for row in batch})
        pending = conn.execute(
            sa.select(t.key, t.id).where(t.published_at.is_(None), t.key.in_(keys),
                                         t.id <= batch[-1].id)
        ).all()
        return publishable(batch, [(k, i) for k, i in pending])

    def _send(self, batch: list[OutboxRow]) -> None:
        if self._producer is None:
            self._producer = self._producer_factory()
        producer = self._producer
        futures = [producer.send(self.topic_prefix + row.topic, key=row.key.encode(), value=row.payload,
                                 headers=[("event_id", row.event_id.encode())])
                   for row in batch]
        producer.flush(timeout=self.ack_timeout)
        for future in futures:
            future.get(timeout=self.ack_timeout)  # raises the send's error, if any
        if self._after_send is not None:
            self._after_send(batch)

    def _mark(self, conn: Connection, batch: list[OutboxRow]) -> None:
        conn.execute(OUTBOX.update().where(OUTBOX.c.id.in_([row.id for row in batch]))
                     .values(published_at=datetime.now(UTC)))

    # -- bookkeeping -------------------------------------------------------------------------

    def _on_success(self, batch: list[OutboxRow]) -> None:
        now = datetime.now(UTC)
        for row in batch:
            published_total.labels(self.service, row.topic).inc()
            publish_lag.labels(self.service).observe(max(0.0, (now - row.created_at).total_seconds()))
        if self.consecutive_failures:
            self._next_stats = 0.0  # the backlog gauge catches up at once after an outage

    def _maintenance(self) -> None:
        now = time.monotonic()
        if now >= self._next_stats:
            self._next_stats = now + self.stats_interval
            self.refresh_metrics()
        if now >= self._next_cleanup:
            self._next_cleanup = now + self.cleanup_interval
            deleted = self.cleanup()
            if deleted:
                log.info("outbox cleanup for %s deleted %d published rows", self.service, deleted)

    def refresh_metrics(self) -> tuple[int, float]:
        """Set outbox_backlog and the oldest row's age from the table; return them."""
        t = OUTBOX.c
        with self.engine.connect() as conn:
            count, oldest = conn.execute(
                sa.select(sa.func.count(), sa.func.min(t.created_at)).where(t.published_at.is_(None))
            ).one()
        age = (datetime.now(UTC) - _utc(oldest)).total_seconds() if oldest is not None else 0.0
        backlog_gauge.labels(self.service).set(count)
        oldest_age_gauge.labels(self.service).set(max(0.0, age))
        return count, age

    def cleanup(self, limit: int = 5000) -> int:
        """Delete up to `limit` rows published longer than `retention` ago."""
        t = OUTBOX.c
        cutoff = datetime.now(UTC) - self.retention
        old = (sa.select(t.id).where(t.published_at.is_not(None), t.published_at < cutoff)
               .limit(limit).scalar_subquery())
        with self.engine.begin() as conn:
            return conn.execute(OUTBOX.delete().where(t.id.in_(old))).rowcount or 0

    def _close_producer(self) -> None:
        producer, self._producer = self._producer, None
        close_quietly(producer, "outbox")
