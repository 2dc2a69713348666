"""`marketplace.jobs.v1` -> returned Connects.

A job cancelled before any contract, or removed for breaking the terms of
service, returns every proposal/boost spend and boost capture whose
reference names it (`job:<job_id>` or `job:<job_id>/...`). Runs inside the
kit's idempotent consumer transaction: the processed_events row, the RETURN
entries and their outbox events commit together. Each return's request_id
is derived from the transaction returned, and a transaction is returned at
most once (unique index), so redeliveries and replicas cannot return twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from adsmon.marketplace.v1 import jobs_pb2
from sqlalchemy.engine import Connection

from services.connects.adapters import metrics
from services.connects.adapters.repository import SqlAlchemyLedgerQueries, SqlAlchemyLedgerUnitOfWork
from services.connects.domain import commands as c
from services.connects.domain.model import ReturnReason, is_returnable_kind
from services.connects.service_layer import handlers
from services.kit.kafka import Event

log = logging.getLogger(__name__)

GROUP_ID = "connects-job-returns"
_REASONS = {
    jobs_pb2.JobCancelled.DESCRIPTOR.full_name: (jobs_pb2.JobCancelled, ReturnReason.JOB_CANCELLED_BEFORE_CONTRACT),
    jobs_pb2.JobRemoved.DESCRIPTOR.full_name: (jobs_pb2.JobRemoved, ReturnReason.JOB_REMOVED_TOS),
}


def return_request_id(transaction_id: str) -> str:
    return f"job-return:{transaction_id}"


def make_handler(clock: Callable[[], datetime], ledger_metrics: handlers.Metrics,
                 on_commit: Callable[[], None] | None = None):  # type: ignore[no-untyped-def]
    def handle(conn: Connection, event: Event, record: object) -> None:
        entry = _REASONS.get(event.payload.TypeName())
        if entry is None:
            return  # other job lifecycle events are ads' business
        cls, reason = entry
        message = cls()
        event.payload.Unpack(message)
        if not message.job_id:
            return
        txs = [t for t in SqlAlchemyLedgerQueries(connection=conn).job_transactions(message.job_id)
               if is_returnable_kind(t)]
        if not txs:
            metrics.jobs_returns_total.labels("nothing_to_return").inc()
            return
        batch = [handlers.Envelope(c.ReturnConnects(return_request_id(t.transaction_id), t.transaction_id, reason),
                                   handlers.SYSTEM) for t in txs]
        outcomes = handlers.execute(SqlAlchemyLedgerUnitOfWork(connection=conn), batch, clock(), ledger_metrics)
        for outcome in outcomes:
            if outcome.error is None:
                metrics.jobs_returns_total.labels("replayed" if outcome.replayed else "returned").inc()
            else:
                metrics.jobs_returns_total.labels(outcome.error.reason.lower()).inc()
                log.info("job %s: return refused: %s", message.job_id, outcome.error.reason)
        if on_commit:
            on_commit()

    return handle
