"""Consumes `connects.ledger.v1` into the books, a batch per transaction.

A thin subclass of the kit's idempotent consumer: each poll's records are
decoded and applied by `apply_ledger_batch` in one database transaction (its
processed_events rows included);
offsets are committed to Kafka only after. A record that is not a ledger
event the books can hold is dead-lettered at once and the rest applied as a
batch. The database being down is waited out and the batch retried. If the
batch fails for any other reason, its records go through the kit's
per-record path instead (`process`: retries, the DLQ for the poisoned record
with its error), so one bad record never blocks or loses the others.

Pipelined: while one batch is in its transaction on the applier thread (most
of that time waiting for PostgreSQL, the GIL released), the consumer's thread
polls and decodes the next; batches are still applied one after another, in
order, and a batch's offsets are committed only after its transaction. A stop
settles the batch in flight before leaving the group. A commit refused while
the group rebalances is sent again with the next one (kit `_commit`); if the
partitions moved meanwhile, their next owner re-reads those records, and its
processed_events inserts wait for the batch's transaction and then skip them.
(kafka-python 3 runs rebalance listeners on its network thread, where a
synchronous commit cannot block, so the batch is not settled there.)
`pipeline=False` runs the steps one after the other (the benchmark compares
both).

Wiring:

    c = RevenueConsumer(engine, bootstrap, group, [LEDGER_TOPIC], service="billing",
                        topic_prefix=prefix)
    c.start() ... c.stop()
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from adsmon.events.v1.event_pb2 import Event
from kafka import KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata
from sqlalchemy.engine import Connection, Engine

from services.billing.adapters import revenue_metrics as metrics
from services.billing.adapters.revenue_events import decode_ledger_event
from services.billing.adapters.revenue_repository import BooksRepository
from services.billing.adapters.topics import BILLING_EVENTS as BILLING_TOPIC
from services.billing.service_layer.revenue import BatchResult, LedgerItem, apply_ledger_batch
from services.kit import backoff
from services.kit import consumer as kit_consumer
from services.kit.consumer import APPLIED, DUPLICATE, RETRIED, IdempotentConsumer, Record
from services.kit.kafka import UndecodableEvent, decode_event, make_consumer
from services.kit.worker import Stopped

log = logging.getLogger(__name__)

MAX_POLL_RECORDS = 2000
IN_FLIGHT_POLL_MS = 50  # how long a poll beside a batch in its transaction may wait for records


class RevenueConsumer(IdempotentConsumer):
    """The idempotent consumer with a batch path for revenue recognition."""

    def __init__(self, engine: Engine, bootstrap: str, group_id: str, topics: list[str], *,
                 service: str, events_topic: str = BILLING_TOPIC,
                 after_commit: Callable[[], Any] | None = None, max_poll_records: int = MAX_POLL_RECORDS,
                 pipeline: bool = True, **options: Any) -> None:
        options.setdefault("consumer_factory", lambda: make_consumer(
            bootstrap, group_id=group_id, client_id=f"{service}-revenue", max_poll_records=max_poll_records,
            fetch_max_bytes=64 * 1024 * 1024, max_partition_fetch_bytes=16 * 1024 * 1024))
        super().__init__(engine, bootstrap, group_id, topics, self._apply_one, service=service,
                         after_commit=after_commit, **options)
        self.events_topic = events_topic
        self.pipeline = pipeline
        self.applied_total = 0
        self.resolved_total = 0  # records settled: applied, duplicate or dead-lettered
        self._applier: ThreadPoolExecutor | None = None
        self._in_flight: _Batch | None = None

    def start(self) -> None:
        self.set_deferred_gauge()
        super().start()

    def set_deferred_gauge(self) -> None:
        """Start the deferred-revenue gauge from the database (the batches move it after)."""
        try:
            with self.engine.connect() as conn:
                metrics.deferred_cents.set(BooksRepository(conn).deferred()[1])
        except Exception as exc:  # the consumer waits for the database itself; the gauge catches up later
            log.warning("deferred revenue gauge not initialised: %s", kit_consumer.describe_error(exc))

    # The per-record path (kit `process`): processed_events is already written by the kit.
    def _apply_one(self, conn: Connection, event: Event, record: Record) -> None:
        tx = decode_ledger_event(event)
        item = LedgerItem(event.event_id, record.topic, record.partition, record.offset, tx)
        # The kit's per-record path wakes the relay itself after its commit.
        self._observe(apply_ledger_batch(conn, [item], group=None, events_topic=self.events_topic), wake=False)

    # -- the pipelined loop ------------------------------------------------------------------

    def poll_once(self) -> int:
        """Poll and decode the next batch while the previous one is in its database transaction, then settle
        that one (metrics, dead letters, offsets) and hand the new one to the applier thread. Returns the
        records resolved (settled) by this call."""
        assert self._consumer is not None
        if not self.pipeline:
            return self._poll_and_apply()
        in_flight = self._in_flight is not None
        # Not 0 while a batch is in flight: a poll that may not wait cannot finish a rejoin of the group (its
        # JoinGroup and SyncGroup round trips), and every commit would be refused until the backlog is drained.
        batches = self._consumer.poll(timeout_ms=min(self.poll_timeout_ms, IN_FLIGHT_POLL_MS) if in_flight
                                      else self.poll_timeout_ms)
        records = [(tp, r) for tp, rs in batches.items() for r in rs]
        batch = self._decode(records) if records else None  # overlaps the in-flight batch's database wait
        resolved = self._finish_in_flight()
        if not resolved and self._uncommitted:
            self._commit({})  # a commit refused during a rebalance, now that the poll has rejoined
        if batch is not None:
            if self._applier is None:
                self._applier = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{self.service}-revenue-apply")
            batch.future = self._applier.submit(self._run, batch)
            self._in_flight = batch
        self._update_lag()
        self._purge_if_due()
        return resolved

    def has_more(self, result: Any) -> bool:
        return bool(result) or self._in_flight is not None  # a batch in flight: poll again at once

    def _poll_and_apply(self) -> int:
        """The same without the overlap: poll, decode, apply, settle, one after the other."""
        assert self._consumer is not None
        batches = self._consumer.poll(timeout_ms=self.poll_timeout_ms)
        records = [(tp, r) for tp, rs in batches.items() for r in rs]
        if records:
            self.apply_records(records, self._consumer)
        elif self._uncommitted:
            self._commit({})
        self._update_lag()
        self._purge_if_due()
        return len(records)

    def _finish_in_flight(self) -> int:
        """Wait for the batch in the applier (if any) and settle it; its record count. Raises `Stopped` if the
        worker stopped while the batch waited out an outage (nothing committed: the records are re-read)."""
        batch, self._in_flight = self._in_flight, None
        if batch is None or batch.future is None:
            return 0
        return self._settle(batch, batch.future.result(), self._consumer)

    def teardown(self) -> None:
        """Settle the batch in flight (its offsets committed if it was applied), then leave the group."""
        try:
            self._finish_in_flight()
        except Stopped:
            pass
        except Exception:
            log.warning("consumer %s: settling the last batch failed (its records will be re-read)",
                        self.group_id, exc_info=True)
        finally:
            applier, self._applier = self._applier, None
            if applier is not None:
                applier.shutdown(wait=True)
            super().teardown()

    # -- one batch ---------------------------------------------------------------------------

    def apply_records(self, records: list[tuple[TopicPartition, Any]], consumer: KafkaConsumer | None) -> int:
        """Apply one poll's records as a batch (or one by one if the batch fails), then commit their offsets;
        returns the record count."""
        batch = self._decode(records)
        return self._settle(batch, self._run(batch), consumer)

    def _decode(self, records: list[tuple[TopicPartition, Any]]) -> _Batch:
        batch = _Batch(records)
        for _, r in records:
            try:
                event = decode_event(r.value)
                batch.items.append(LedgerItem(event.event_id, r.topic, r.partition, r.offset,
                                              decode_ledger_event(event)))
            except UndecodableEvent as exc:
                batch.undecodable.append((r, exc))
        return batch

    def _run(self, batch: _Batch) -> BatchResult | None:
        """The batch's transaction, then at once its metrics and the relay's wake (on the applier thread when
        pipelined): they move when the books do, not a poll later."""
        started = time.perf_counter()
        result = self._apply_batch(batch.items)
        if result is not None and batch.records:
            topic = batch.records[0][1].topic
            self._observe(result, wake=True)
            metrics.batch_size.observe(len(batch.items))
            kit_consumer.handle_seconds.labels(self.service, topic).observe(time.perf_counter() - started)
            for outcome, n in ((APPLIED, result.applied), (DUPLICATE, result.duplicates)):
                if n:
                    kit_consumer.processed_total.labels(self.service, topic, outcome).inc(n)
        return result

    def _settle(self, batch: _Batch, result: BatchResult | None, consumer: KafkaConsumer | None) -> int:
        """After the batch's transaction: the fallback record by record if it failed, else the undecodable
        records' dead letters; then the offsets (every record's effect is committed, or its dead letter
        written)."""
        records = batch.records
        if result is None:
            for _, r in records:
                self.process(r)
        else:
            for r, error in batch.undecodable:
                self._dead_letter(r, error, attempts=0)
        done: dict[TopicPartition, OffsetAndMetadata] = {}
        for tp, r in records:
            done[tp] = OffsetAndMetadata(r.offset + 1, "", -1)
        if consumer is not None:
            self._commit(done)
        self.resolved_total += len(records)
        return len(records)

    def _apply_batch(self, items: list[LedgerItem]) -> BatchResult | None:
        """The batch in one transaction; None if it failed for a reason of its own (a poisoned record: the
        caller applies the records one by one). The database being down is waited out, the batch retried."""
        outages = 0
        while True:
            if self.stopping:
                raise Stopped
            try:
                with self.engine.begin() as conn:
                    return apply_ledger_batch(conn, items, group=self.group_id, events_topic=self.events_topic)
            except Exception as exc:
                if not kit_consumer.is_infrastructure(exc):
                    log.warning("consumer %s: batch of %d failed, applying record by record: %s", self.group_id,
                                len(items), kit_consumer.describe_error(exc))
                    return None
                outages += 1
                if outages == 1:
                    log.warning("consumer %s: infrastructure failure on a batch of %d, retrying until it "
                                "recovers: %s", self.group_id, len(items), kit_consumer.describe_error(exc))
                kit_consumer.processed_total.labels(self.service, self.topics[0], RETRIED).inc()
                self.sleep(backoff.exponential(self.retry_initial, self.outage_backoff_max, outages))

    def _observe(self, result: BatchResult, *, wake: bool) -> None:  # the applier's thread when pipelined
        self.applied_total += result.applied
        for product, (connects, cents) in result.recognised.items():
            metrics.revenue_recognised_cents.labels(product.value).inc(cents)
            metrics.revenue_recognised_connects.labels(product.value).inc(connects)
        if result.breakage_cents:
            metrics.breakage_cents.inc(result.breakage_cents)
        metrics.deferred_cents.inc(result.deferred_delta)
        if wake and result.applied and self._after_commit is not None:
            self._after_commit()


@dataclass
class _Batch:
    """One poll's records, decoded, and the applier's future while its transaction runs."""

    records: list[tuple[TopicPartition, Any]]
    items: list[LedgerItem] = field(default_factory=list)
    undecodable: list[tuple[Any, Exception]] = field(default_factory=list)
    future: Future[BatchResult | None] | None = None

