"""The ledger's application facade used by the gRPC servicer, the consumers and the schedulers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from services.connects.domain import commands as c
from services.connects.service_layer import handlers
from services.connects.service_layer import queries as q
from services.connects.service_layer.handlers import AnyCommand, Envelope, Metrics, Outcome, precheck
from services.connects.service_layer.receipts import Receipt
from services.connects.service_layer.totals import LedgerTotals
from services.connects.service_layer.unit_of_work import (
    AbstractLedgerQueries,
    AbstractLedgerUnitOfWork,
    RequestIdConflict,
)
from services.kit.batcher import Batcher
from services.kit.errors import DomainError

T = TypeVar("T")
RunBlocking = Callable[..., Awaitable[Any]]
LedgerBatcher = Batcher[Envelope, Outcome]


def _request_id(envelope: Envelope) -> str:
    return envelope.command.request_id if isinstance(envelope.command, c.Command) else ""


def ledger_batcher(uow_factory: Callable[[], AbstractLedgerUnitOfWork], clock: Callable[[], datetime],
                   metrics: Metrics, *, service: str, max_batch: int = 256, threads: int = 1,
                   after_commit: Callable[[], None] | None = None) -> LedgerBatcher:
    """The group-commit batcher in front of `handlers.execute`: one unit of work per batch of commands.

    A RequestIdConflict (a duplicate committed by another process meanwhile) reruns the batch, whose
    replays then answer it; commands with the same request_id never share a batch.
    """

    def run_batch(envelopes: Sequence[Envelope]) -> list[Outcome]:
        return handlers.execute(uow_factory(), envelopes, clock(), metrics)

    return Batcher("ledger-batcher", run_batch, service=service, key=_request_id, max_batch=max_batch,
                   threads=threads, retry_on=(RequestIdConflict,), after_commit=after_commit)


class Ledger:
    """Async entry point: mutations go through the group-commit batcher, reads through a thread pool.

    `max_amount` is the business maximum of one command's amount (ConnectsConfig.max_amount): a command above it
    is refused (AMOUNT_TOO_LARGE) before it is queued."""

    def __init__(self, batcher: LedgerBatcher, queries: AbstractLedgerQueries, run_blocking: RunBlocking,
                 clock: Callable[[], datetime], metrics: Metrics, *, max_amount: int = c.DEFAULT_MAX_AMOUNT) -> None:
        self.batcher = batcher
        self.max_amount = max_amount
        self.queries = queries
        self._run = run_blocking
        self._clock = clock
        self._metrics = metrics

    async def execute(self, command: AnyCommand, caller: str) -> Outcome:
        """Apply one command; refusals come back in the outcome, not raised."""
        try:
            # Refused before queuing costs nothing, and is counted like any other refusal.
            c.check_amount_bound(command, self.max_amount)
            precheck(command, caller)
        except DomainError as exc:
            self._metrics.refused(command.method, exc)
            return Outcome(error=exc)
        return await self.batcher.submit(Envelope(command, caller))

    async def mutate(self, command: AnyCommand, caller: str) -> Receipt:
        """Apply one mutation and return its receipt, raising its DomainError if refused."""
        outcome = await self.execute(command, caller)
        if outcome.error is not None:
            raise outcome.error
        assert outcome.receipt is not None
        return outcome.receipt

    async def balance(self, account_id: str) -> q.Balance:
        return await self._run(q.get_balance, self.queries, account_id, self._clock())

    async def ledger_totals(self, start: datetime | None, end: datetime | None) -> LedgerTotals:
        return await self._run(q.get_ledger_totals, self.queries, start, end)

    async def transactions(self, account_id: str, page_size: int, page_token: str) -> q.TransactionPage:
        return await self._run(q.list_transactions, self.queries, account_id, page_size, page_token)
