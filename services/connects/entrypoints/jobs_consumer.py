"""`marketplace.jobs.v1` -> returned Connects.

A job cancelled before any contract, or removed for breaking the terms of
service, returns every proposal/boost spend and boost capture whose
reference names it (`job:<job_id>` or `job:<job_id>/...`). Runs inside the
kit's idempotent consumer transaction: the processed_events row, the RETURN
entries and their outbox events commit together. Each return's request_id
is derived from the transaction returned, in the ledger's reserved namespace
(`connects-internal:`, which client request ids may not use, so no client
command can take it first), and a transaction is returned at most once
(unique index), so redeliveries and replicas cannot return twice.

A return refused for a business reason that can legitimately happen
(returned meanwhile through ReturnConnects, or the wallet at its limit) is
counted and logged and the other returns go ahead. Any other refusal means
the event was not handled as it should be: it is raised, so nothing commits
and the event goes to the DLQ with the error instead of being marked
processed with Connects left unreturned.
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


# Refusals of one return that leave nothing to fix: the others of the job still go ahead.
EXPECTED_REFUSALS = frozenset({"ALREADY_RETURNED", "BALANCE_LIMIT_EXCEEDED"})


def return_request_id(transaction_id: str) -> str:
    return c.internal_request_id("job-return", transaction_id)


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
        unexpected = [(t, o.error) for t, o in zip(txs, outcomes, strict=True)
                      if o.error is not None and o.error.reason not in EXPECTED_REFUSALS]
        if unexpected:
            tx, error = unexpected[0]
            log.error("job %s: return of %s refused unexpectedly (%s): the event is not applied", message.job_id,
                      tx.transaction_id, error)
            metrics.jobs_returns_total.labels(error.reason.lower()).inc()
            raise error  # rolls the whole event back; the kit's consumer dead-letters it with the error
        for tx, outcome in zip(txs, outcomes, strict=True):
            if outcome.error is None:
                metrics.jobs_returns_total.labels("replayed" if outcome.replayed else "returned").inc()
            else:
                metrics.jobs_returns_total.labels(outcome.error.reason.lower()).inc()
                log.warning("job %s: return of %s refused: %s", message.job_id, tx.transaction_id,
                            outcome.error.reason)
        if on_commit:
            on_commit()

    return handle
