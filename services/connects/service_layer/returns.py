"""Use case: a job cancelled before any contract, or removed for breaking the terms, returns its Connects.

Every proposal/boost spend and boost capture whose reference names the job
(`job:<job_id>` or `job:<job_id>/...`) is returned in one unit of work. Each
return's request_id is derived from the transaction returned, in the ledger's
reserved namespace (`connects-internal:`, which client request ids may not use,
so no client command can take it first), and a transaction is returned at most
once (unique index), so redeliveries and replicas cannot return twice.

A return refused for a business reason that can legitimately happen (returned
meanwhile through ReturnConnects, or the wallet at its limit) is counted and
logged and the other returns go ahead. Any other refusal means the job was not
handled as it should be: it is raised, so nothing commits (the jobs consumer
then dead-letters the event with the error instead of marking it processed
with Connects left unreturned).
"""

from __future__ import annotations

import logging
from datetime import datetime

from services.connects.domain import commands as c
from services.connects.domain.model import ReturnReason, is_returnable_kind
from services.connects.service_layer import handlers
from services.connects.service_layer.handlers import SYSTEM, Envelope, Metrics, Outcome
from services.connects.service_layer.unit_of_work import AbstractLedgerQueries, AbstractLedgerUnitOfWork

log = logging.getLogger(__name__)

# Refusals of one return that leave nothing to fix: the others of the job still go ahead.
EXPECTED_REFUSALS = frozenset({"ALREADY_RETURNED", "BALANCE_LIMIT_EXCEEDED"})


def return_request_id(transaction_id: str) -> str:
    return c.internal_request_id("job-return", transaction_id)


def return_job_connects(uow: AbstractLedgerUnitOfWork, queries: AbstractLedgerQueries, job_id: str,
                        reason: ReturnReason, now: datetime, metrics: Metrics) -> list[Outcome]:
    """Return every returnable transaction of `job_id` in `uow`; one outcome per transaction returned."""
    txs = [t for t in queries.job_transactions(job_id) if is_returnable_kind(t)]
    if not txs:
        metrics.job_return("nothing_to_return")
        return []
    batch = [Envelope(c.ReturnConnects(return_request_id(t.transaction_id), t.transaction_id, reason), SYSTEM)
             for t in txs]
    outcomes = handlers.execute(uow, batch, now, metrics)
    for tx, outcome in zip(txs, outcomes, strict=True):
        if outcome.error is not None and outcome.error.reason not in EXPECTED_REFUSALS:
            log.error("job %s: return of %s refused unexpectedly (%s): the event is not applied", job_id,
                      tx.transaction_id, outcome.error)
            metrics.job_return(outcome.error.reason.lower())
            raise outcome.error  # rolls the whole job back
    for tx, outcome in zip(txs, outcomes, strict=True):
        if outcome.error is None:
            metrics.job_return("replayed" if outcome.replayed else "returned")
        else:
            metrics.job_return(outcome.error.reason.lower())
            log.warning("job %s: return of %s refused: %s", job_id, tx.transaction_id, outcome.error.reason)
    return outcomes
