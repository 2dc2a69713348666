"""`marketplace.jobs.v1` -> returned Connects (the use case is `service_layer.returns`).

Runs inside the kit's idempotent consumer transaction: the processed_events
row, the RETURN entries and their outbox events commit together; the consumer
wakes the outbox relay after that commit (its `after_commit`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from adsmon.marketplace.v1 import jobs_pb2
from sqlalchemy.engine import Connection

from services.connects.domain.model import ReturnReason
from services.connects.service_layer import returns
from services.connects.service_layer.handlers import Metrics
from services.connects.service_layer.unit_of_work import AbstractLedgerQueries, AbstractLedgerUnitOfWork
from services.kit.consumer import Handler, Record
from services.kit.kafka import Event

GROUP_ID = "connects-job-returns"
_REASONS = {
    jobs_pb2.JobCancelled.DESCRIPTOR.full_name: (jobs_pb2.JobCancelled, ReturnReason.JOB_CANCELLED_BEFORE_CONTRACT),
    jobs_pb2.JobRemoved.DESCRIPTOR.full_name: (jobs_pb2.JobRemoved, ReturnReason.JOB_REMOVED_TOS),
}


def make_handler(clock: Callable[[], datetime], metrics: Metrics,
                 uow_on: Callable[[Connection], AbstractLedgerUnitOfWork],
                 queries_on: Callable[[Connection], AbstractLedgerQueries]) -> Handler:
    """The consumer's handler; `uow_on(conn)` / `queries_on(conn)` bind the ledger to the consumer's transaction."""

    def handle(conn: Connection, event: Event, record: Record) -> None:
        entry = _REASONS.get(event.payload.TypeName())
        if entry is None:
            return  # other job lifecycle events are ads' business
        cls, reason = entry
        message = cls()
        event.payload.Unpack(message)
        if message.job_id:
            returns.return_job_connects(uow_on(conn), queries_on(conn), message.job_id, reason, clock(), metrics)

    return handle
