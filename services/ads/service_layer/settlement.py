"""Settlement: every capture and release of a closed auction, retried until the ledger confirms it.

Steps are rows (one per bid, written in the transaction that closed the auction). `settle_due` claims due
steps (skip locked, with a lease), calls the ledger with the step's derived request id
(`ads:bid:<bid_id>:capture` / `:release`) and records each answer in the auction's transaction (the auction
locked, then its pending steps: a step another replica already recorded is skipped). The ledger calls of
a batch run concurrently on the worker's pool, across auctions; each auction is recorded once all of its
claimed steps are back. A crash
between the ledger's answer and its record replays the same request id after the lease: the ledger
answers it once, so nothing is captured or released twice, and no step is lost.

Ledger refusals that end a step: HOLD_EXPIRED / HOLD_NOT_OPEN (the hold resolved without us: nothing was
captured). Anything else (ledger down, unexpected refusals) is retried with backoff.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import datetime, timedelta

from services.ads.domain.auction import StepAction
from services.ads.service_layer.auctions import UowFactory, publish_facts
from services.ads.service_layer.metrics import Metrics, NoMetrics
from services.ads.service_layer.unit_of_work import ClaimedStep
from services.connects.client import AbstractConnectsClient
from services.kit import backoff
from services.kit.errors import DomainError, Unavailable

log = logging.getLogger(__name__)

TERMINAL_REFUSALS = frozenset({"HOLD_EXPIRED", "HOLD_NOT_OPEN"})


@dataclass(frozen=True)
class StepResult:
    claimed: ClaimedStep
    charged: int = 0
    outcome: str = ""  # CAPTURED, RELEASED, HOLD_EXPIRED, HOLD_NOT_OPEN; empty: retry
    error: str = ""
    released: int = 0


def _execute(connects: AbstractConnectsClient, claimed: ClaimedStep, metrics: Metrics) -> StepResult:
    step = claimed.step
    try:
        if step.action is StepAction.CAPTURE:
            move = connects.capture(step.request_id, step.hold_id, step.amount)
            return StepResult(claimed, move.amount, "CAPTURED")
        move = connects.release(step.request_id, step.hold_id)
        return StepResult(claimed, 0, "RELEASED", released=move.amount)
    except Unavailable as exc:
        metrics.connects_error(step.action.value.lower(), exc.reason)
        return StepResult(claimed, error=f"{exc.reason}: {exc.message}")
    except DomainError as refusal:
        if refusal.reason in TERMINAL_REFUSALS:
            log.warning("bid %s: %s refused with %s: recorded as settled without capture", step.bid_id,
                        step.action.value, refusal.reason)
            return StepResult(claimed, 0, refusal.reason)
        metrics.connects_error(step.action.value.lower(), refusal.reason)
        log.error("bid %s: %s refused unexpectedly (%s); retrying", step.bid_id, step.action.value, refusal)
        return StepResult(claimed, error=f"{refusal.reason}: {refusal.message}")


def settle_due(uow_factory: UowFactory, connects: AbstractConnectsClient, clock: Callable[[], datetime], *,
               limit: int = 64, lease: timedelta = timedelta(seconds=30), pool: ThreadPoolExecutor | None = None,
               metrics: Metrics | None = None, retry_initial: float = 1.0, retry_max: float = 300.0) -> int:
    """Claim due steps, run them against the ledger, record the answers. Returns the steps claimed.

    With a `pool`, every claimed step goes to the ledger concurrently (at most the pool's size at once, across
    auctions), and each auction's answers are recorded in one transaction as soon as all of its steps are
    back, while other auctions' steps are still in flight."""
    metrics = metrics or NoMetrics()
    with uow_factory() as uow:
        claimed = uow.steps.claim(clock(), lease, limit)
        uow.commit()
    if not claimed:
        return 0
    by_job: dict[str, list[ClaimedStep]] = defaultdict(list)
    for c in claimed:
        by_job[c.step.job_id].append(c)

    def record(job_id: str, results: list[StepResult]) -> None:
        _record(uow_factory, job_id, results, clock(), metrics, retry_initial, retry_max)

    if pool is None or len(claimed) == 1:
        for job_id, job_steps in by_job.items():
            record(job_id, [_execute(connects, c, metrics) for c in job_steps])
        return len(claimed)
    futures = {pool.submit(_execute, connects, c, metrics): c.step.job_id for c in claimed}
    waiting = {job_id: len(job_steps) for job_id, job_steps in by_job.items()}
    answers: dict[str, list[StepResult]] = defaultdict(list)
    for done in as_completed(futures):
        job_id = futures[done]
        answers[job_id].append(done.result())
        waiting[job_id] -= 1
        if not waiting[job_id]:
            record(job_id, answers.pop(job_id))
    return len(claimed)


def _record(uow_factory: UowFactory, job_id: str, results: list[StepResult], now: datetime, metrics: Metrics,
            retry_initial: float, retry_max: float) -> None:
    with uow_factory() as uow:
        # the auction locked first (as every writer of its steps does), then its pending steps: one round trip
        uow.auctions.prefetch(job_id)
        uow.steps.prefetch_pending(job_id)
        auction = uow.auctions.get(job_id)
        assert auction is not None, f"settlement step of unknown auction {job_id}"
        pending = uow.steps.pending_of(job_id)
        for r in results:
            step = r.claimed.step
            if step.bid_id not in pending:
                continue  # another replica recorded it after our lease ran out: same ledger answer
            if r.outcome:
                uow.steps.done(step.bid_id, r.outcome, now)
                auction.settle(step.proposal_id, r.charged, now)
                metrics.step_settled(step.action.value, r.outcome, r.released or r.charged)
            else:
                metrics.step_settled(step.action.value, "RETRY", 0)
                wait = backoff.exponential(retry_initial, retry_max, r.claimed.attempts - 1)
                uow.steps.retry_later(step.bid_id, r.error, now + timedelta(seconds=wait))
        uow.auctions.save(auction)
        publish_facts(uow, auction.facts, now)
        uow.commit()
