"""Idempotent Kafka consumer: each event's effect is applied once, in one DB transaction.

Per record: decode the `Event` envelope (undecodable: dead-letter at once);
in one transaction insert (group, event_id) into `processed_events` (already
there: a duplicate, skip) and call the handler; commit; only then commit the
Kafka offset. A crash anywhere re-delivers the record and the processed_events
row makes the redelivery a no-op.

Handler failures are retried with backoff up to `max_attempts`, then the record
goes to `<topic>.dlq` as a `DeadLetter` and the partition moves on. A
`DomainError` (a business rule said no) is permanent: dead-lettered without
retries. The database or a dependency being down (`OperationalError`,
`services.kit.errors.Unavailable`) is not the event's fault: it is retried
until it works, never dead-lettered.

Wiring a service:

    versions/000N_processed_events.py: kit.migrations.create_processed_events_table() (+ the purge index)
    c = kit.bootstrap.consumer(config, engine, "billing-revenue", topics.CONSUMES, handle_ledger_event,
                               after_commit=relay.wake)   # the handler's outbox rows go out at once
    App(..., components=[c])                              # a kit.worker.Worker: serve() starts and stops it
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Protocol

import sqlalchemy as sa
from adsmon.events.v1.event_pb2 import DeadLetter, Event
from google.protobuf.message import DecodeError
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata
from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from services.kit import backoff, errors
from services.kit.db import is_postgres
from services.kit.kafka import (
    CLOSE_TIMEOUT_MS,
    MAX_ID_LENGTH,
    UndecodableEvent,
    close_quietly,
    decode_event,
    dlq_topic,
    make_consumer,
    make_producer,
)
from services.kit.worker import Stopped, Worker

log = logging.getLogger(__name__)

TABLE_NAME = "processed_events"

APPLIED, DUPLICATE, DEAD_LETTERED, RETRIED = "applied", "duplicate", "dead_lettered", "retried"

processed_total = Counter("consumer_processed_total", "Consumed records by outcome (retried: per retry).",
                          ["service", "topic", "result"])
dlq_total = Counter("consumer_dlq_total", "Records sent to <topic>.dlq; their effect was not applied.",
                    ["service", "topic"])
lag_gauge = Gauge("consumer_lag", "Records behind the partition's end offset.",
                  ["service", "topic", "partition"])
handle_seconds = Histogram("consumer_handle_seconds",
                           "Time to apply one record (processed_events insert + handler + commit).",
                           ["service", "topic"],
                           buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))

class Record(Protocol):
    """What we use of kafka-python's ConsumerRecord (tests pass look-alikes)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


Handler = Callable[[Connection, Event, Record], None]
"""handler(conn, event, record): apply the event's effect using `conn` (the open transaction)."""


def processed_events_table(metadata: sa.MetaData) -> sa.Table:
    """Which events each consumer group has applied; the primary key is the de-duplication."""
    return sa.Table(
        TABLE_NAME, metadata,
        sa.Column("consumer_group", sa.String(255), primary_key=True),
        sa.Column("event_id", sa.String(MAX_ID_LENGTH), primary_key=True),
        sa.Column("topic", sa.String(249), nullable=False),
        sa.Column("partition", sa.Integer, nullable=False),
        sa.Column("offset", sa.BigInteger, nullable=False),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=False),
        # The retention purge deletes by (group, age); without this it scans the table.
        sa.Index("ix_processed_events_group_processed_at", "consumer_group", "processed_at"),
    )


PROCESSED = processed_events_table(sa.MetaData())


def _is_permanent(exc: BaseException) -> bool:
    # Bytes that do not parse as the payload type they name never will: no retries.
    if isinstance(exc, UndecodableEvent | DecodeError):
        return True
    return isinstance(exc, errors.DomainError) and not isinstance(exc, errors.Unavailable | errors.Aborted)


def is_infrastructure(exc: BaseException) -> bool:
    """The database or a dependency is down: wait for it, never blame the event."""
    if isinstance(exc, errors.Unavailable):
        return True
    if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError | sa_exc.DisconnectionError):
        return True
    return isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated


def describe_error(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 2000 else text[:2000] + "..."


class IdempotentConsumer(Worker):
    """Consumes `topics` as `group_id` on its own thread (a `kit.worker.Worker`) and applies each event once."""

    def __init__(
        self, engine: Engine, bootstrap: str, group_id: str, topics: Sequence[str], handler: Handler,
        *, service: str, max_attempts: int = 5, dlq_producer: KafkaProducer | None = None,
        consumer_factory: Callable[[], KafkaConsumer] | None = None,
        retry_initial: float = 0.2, retry_max: float = 5.0, outage_backoff_max: float = 30.0,
        poll_timeout_ms: int = 500, lag_interval: float = 5.0, dlq_timeout: float = 30.0,
        retention: timedelta = timedelta(days=8), purge_interval: float = 600.0, topic_prefix: str = "",
        after_commit: Callable[[], None] | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        # interval 0: the poll itself waits up to poll_timeout_ms for records.
        super().__init__(f"consumer-{group_id}", service=service, interval=0.0, error_backoff_initial=retry_initial,
                         error_backoff_max=outage_backoff_max)
        self.engine = engine
        self.bootstrap = bootstrap
        self.group_id = group_id
        self.topics = [topic_prefix + t for t in topics]  # the prefix namespaces an environment
        self.handler = handler
        self._after_commit = after_commit
        self.max_attempts = max_attempts
        self._consumer_factory = consumer_factory or (
            lambda: make_consumer(bootstrap, group_id=group_id, client_id=f"{service}-consumer"))
        self._dlq_producer = dlq_producer
        self._owns_dlq_producer = dlq_producer is None
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.outage_backoff_max = outage_backoff_max
        self.poll_timeout_ms = poll_timeout_ms
        self.lag_interval = lag_interval
        self.dlq_timeout = dlq_timeout
        self._consumer: KafkaConsumer | None = None
        self._next_lag = 0.0
        self._uncommitted: dict[TopicPartition, OffsetAndMetadata] = {}  # a refused commit, tried again
        # Keep ids longer than Kafka keeps records (7 days by default): a redelivery is always recognised.
        self.retention = retention
        self.purge_interval = purge_interval
        self._next_purge = time.monotonic() + purge_interval
        self._insert = postgresql.insert if is_postgres(engine) else sqlite.insert

    # -- lifecycle (kit.worker.Worker) -------------------------------------------------------

    def start(self) -> None:
        for topic in self.topics:  # exported from 0, so the first dead letter is an increase() the alert sees
            dlq_total.labels(self.service, topic)
        super().start()

    def run_once(self) -> int:
        """Join the group if not yet in it, then poll and resolve one batch (see `poll_once`)."""
        if self._consumer is None:
            self._consumer = self._subscribed_consumer()
        return self.poll_once()

    def teardown(self) -> None:
        """Leave the group (offsets of applied records are already committed)."""
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            try:
                # Bounded: a stop during a rebalance must not wait out the coordinator (took 16 s).
                consumer.close(autocommit=False, timeout_ms=CLOSE_TIMEOUT_MS)
            except Exception:
                log.debug("closing consumer %s failed", self.group_id, exc_info=True)

    def stop(self, timeout: float | None = None) -> None:
        """Finish or abandon the record in hand, commit what is applied, leave the group."""
        super().stop(timeout)
        if self._owns_dlq_producer:
            self._close_dlq_producer()

    def _subscribed_consumer(self) -> KafkaConsumer:
        """A consumer subscribed to our topics, once their partition metadata is known.

        A group leader that assigns before it has the topics' metadata hands out no
        partitions for them and may not rebalance later (seen with kafka-python 3.0),
        leaving the group idle: so fetch the metadata first, and retry until it is there.
        """
        consumer = self._consumer_factory()
        try:
            for topic in self.topics:
                if not consumer.partitions_for_topic(topic):
                    raise RuntimeError(f"no partition metadata for topic {topic} yet")
            consumer.subscribe(self.topics)
        except Exception:
            consumer.close(autocommit=False)
            raise
        return consumer

    # -- the loop ----------------------------------------------------------------------------

    def poll_once(self) -> int:
        """Poll one batch, resolve every record, commit their offsets. Returns the record count."""
        assert self._consumer is not None
        batches = self._consumer.poll(timeout_ms=self.poll_timeout_ms)
        done: dict[TopicPartition, OffsetAndMetadata] = {}
        count = 0
        try:
            for tp, records in batches.items():
                for record in records:
                    self.process(record)
                    done[tp] = OffsetAndMetadata(record.offset + 1, "", -1)
                    count += 1
        finally:
            # Offsets only of records whose effect is committed (or dead-lettered).
            if done or self._uncommitted:
                self._commit(done)
        self._update_lag()
        self._purge_if_due()
        return count

    def _purge_if_due(self) -> None:
        if time.monotonic() < self._next_purge:
            return
        self._next_purge = time.monotonic() + self.purge_interval
        try:
            self.purge()
        except Exception:
            log.warning("consumer %s: purging processed_events failed; next run retries", self.group_id,
                        exc_info=True)

    def purge(self, now: datetime | None = None) -> int:
        """Delete this group's processed-event ids older than the retention; returns how many."""
        cutoff = (now or datetime.now(UTC)) - self.retention
        with self.engine.begin() as conn:
            result = conn.execute(PROCESSED.delete().where(PROCESSED.c.consumer_group == self.group_id,
                                                           PROCESSED.c.processed_at < cutoff))
        return result.rowcount or 0

    def _commit(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        """Commit `offsets`, with those of an earlier refused commit whose partitions are still ours.

        A commit is refused while the group rebalances (RebalanceInProgressError, a new generation): the
        offsets are kept and sent with the next commit (the next poll completes the rejoin), so the records
        are not re-read for nothing. A partition that went to another consumer meanwhile is dropped from
        them: its new owner re-reads those records and de-duplicates them.
        """
        assert self._consumer is not None
        if self._uncommitted:
            try:
                assigned = self._consumer.assignment()
            except Exception:
                assigned = set()
            offsets = {**{tp: om for tp, om in self._uncommitted.items() if tp in assigned}, **offsets}
            self._uncommitted = {}
        if not offsets:
            return
        try:
            self._consumer.commit(offsets)
        except Exception as exc:
            self._uncommitted = dict(offsets)
            log.warning("consumer %s: offset commit refused, sent again with the next one (if the partitions "
                        "move meanwhile, their next owner re-reads and de-duplicates the records): %s",
                        self.group_id, describe_error(exc))

    def _update_lag(self) -> None:
        now = time.monotonic()
        if now < self._next_lag or self._consumer is None:
            return
        self._next_lag = now + self.lag_interval
        try:
            assigned = list(self._consumer.assignment())
            if not assigned:
                return
            ends = self._consumer.end_offsets(assigned, timeout_ms=2000)
            for tp in assigned:
                position = self._consumer.position(tp, timeout_ms=2000)
                if position is not None and tp in ends:
                    lag_gauge.labels(self.service, tp.topic, str(tp.partition)).set(
                        max(0, ends[tp] - position))
        except Exception:
            log.debug("consumer %s: lag update failed", self.group_id, exc_info=True)

    # -- one record --------------------------------------------------------------------------

    def process(self, record: Record) -> str:
        """Resolve one record: applied, duplicate or dead_lettered. Blocks while infra is down."""
        topic = record.topic
        try:
            event = decode_event(record.value)
        except UndecodableEvent as exc:
            return self._dead_letter(record, exc, attempts=0)
        attempts = outages = 0
        while True:
            if self.stopping:
                raise Stopped
            started = time.perf_counter()
            try:
                result = self._apply(event, record)
            except Exception as exc:
                handle_seconds.labels(self.service, topic).observe(time.perf_counter() - started)
                if _is_permanent(exc):
                    return self._dead_letter(record, exc, attempts=attempts + 1)
                if is_infrastructure(exc):
                    outages += 1
                    if outages == 1:
                        log.warning("consumer %s: infrastructure failure on %s, retrying until it "
                                    "recovers: %s", self.group_id, event.event_id, describe_error(exc))
                    delay = backoff.exponential(self.retry_initial, self.outage_backoff_max, outages)
                else:
                    attempts += 1
                    if attempts >= self.max_attempts:
                        return self._dead_letter(record, exc, attempts=attempts)
                    log.info("consumer %s: handler failed for %s (attempt %d/%d): %s", self.group_id,
                             event.event_id, attempts, self.max_attempts, describe_error(exc))
                    delay = backoff.exponential(self.retry_initial, self.retry_max, attempts - 1)
                processed_total.labels(self.service, topic, RETRIED).inc()
                self.sleep(delay)
                continue
            handle_seconds.labels(self.service, topic).observe(time.perf_counter() - started)
            processed_total.labels(self.service, topic, result).inc()
            if outages:
                log.info("consumer %s: recovered after %d infrastructure failures", self.group_id, outages)
            return result

    def _apply(self, event: Event, record: Record) -> str:
        p = PROCESSED.c
        with self.engine.begin() as conn:
            inserted = conn.execute(
                self._insert(PROCESSED).values(
                    consumer_group=self.group_id, event_id=event.event_id,
                    topic=record.topic, partition=record.partition,
                    offset=record.offset, processed_at=datetime.now(UTC),
                ).on_conflict_do_nothing(index_elements=[p.consumer_group, p.event_id])
                # RETURNING, not rowcount: SQLAlchemy reports -1 for Core INSERTs on psycopg.
                .returning(p.event_id)
            ).first()
            if inserted is None:
                return DUPLICATE
            self.handler(conn, event, record)
        # Only now is the effect durable (and its outbox rows visible to the relay).
        if self._after_commit is not None:
            try:
                self._after_commit()
            except Exception:
                log.warning("consumer %s: after-commit hook failed", self.group_id, exc_info=True)
        return APPLIED

    def _dead_letter(self, record: Record, exc: BaseException, *, attempts: int) -> str:
        r = record
        letter = DeadLetter(
            source_topic=r.topic, source_partition=r.partition, source_offset=r.offset,
            key=r.key or b"", value=r.value or b"", error=describe_error(exc),
            attempts=attempts, consumer_group=self.group_id,
        )
        letter.failed_at.FromDatetime(datetime.now(UTC))
        target = dlq_topic(r.topic)
        failures = 0
        while True:
            try:
                producer = self._dlq()
                producer.send(target, key=r.key, value=letter.SerializeToString()).get(
                    timeout=self.dlq_timeout)
                break
            except Exception as send_exc:
                # Without the dead letter the record must not be skipped: keep trying.
                failures += 1
                if failures == 1:
                    log.warning("consumer %s: cannot write to %s, retrying: %s", self.group_id, target,
                                describe_error(send_exc))
                if self._owns_dlq_producer:
                    self._close_dlq_producer()
                if self.sleep(backoff.exponential(self.retry_initial, self.outage_backoff_max, failures)):
                    raise Stopped from None
        log.warning("consumer %s: dead-lettered %s[%d]@%d after %d attempts: %s", self.group_id,
                    r.topic, r.partition, r.offset, attempts, letter.error)
        dlq_total.labels(self.service, r.topic).inc()
        processed_total.labels(self.service, r.topic, DEAD_LETTERED).inc()
        return DEAD_LETTERED

    def _dlq(self) -> KafkaProducer:
        if self._dlq_producer is None:
            self._dlq_producer = make_producer(self.bootstrap, client_id=f"{self.service}-dlq")
        return self._dlq_producer

    def _close_dlq_producer(self) -> None:
        producer, self._dlq_producer = self._dlq_producer, None
        close_quietly(producer, "DLQ")
