"""The ledger's application facade used by the gRPC servicer, the consumers and the schedulers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

from services.connects.domain import commands as c
from services.connects.service_layer import queries as q
from services.connects.service_layer.batcher import Batcher
from services.connects.service_layer.handlers import AnyCommand, Envelope, Outcome, precheck
from services.connects.service_layer.receipts import Receipt
from services.connects.service_layer.totals import LedgerTotals
from services.connects.service_layer.unit_of_work import AbstractLedgerQueries

T = TypeVar("T")
RunBlocking = Callable[..., Awaitable[Any]]


class Ledger:
    """Async entry point: mutations go through the group-commit batcher, reads through a thread pool.

    `max_amount` is the business maximum of one command's amount (ConnectsConfig.max_amount): a command above it
    is refused (AMOUNT_TOO_LARGE) before it is queued."""

    def __init__(self, batcher: Batcher, queries: AbstractLedgerQueries, run_blocking: RunBlocking,
                 clock: Callable[[], datetime], *, max_amount: int = c.DEFAULT_MAX_AMOUNT) -> None:
        self.batcher = batcher
        self.max_amount = max_amount
        self.queries = queries
        self._run = run_blocking
        self._clock = clock

    async def execute(self, command: AnyCommand, caller: str) -> Outcome:
        """Apply one command; refusals come back in the outcome, not raised (those found before queuing are)."""
        c.check_amount_bound(command, self.max_amount)
        precheck(command, caller)
        return await self.batcher.submit(Envelope(command, caller))

    async def mutate(self, command: AnyCommand, caller: str) -> Receipt:
        """Apply one mutation and return its receipt, raising its DomainError if refused."""
        outcome = await self.execute(command, caller)
        if outcome.error is not None:
            raise outcome.error
        assert outcome.receipt is not None
        return outcome.receipt

    async def run_read(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._run(fn, *args)

    async def balance(self, account_id: str) -> q.Balance:
        return await self._run(q.get_balance, self.queries, account_id, self._clock())

    async def ledger_totals(self, start: datetime | None, end: datetime | None) -> LedgerTotals:
        return await self._run(q.get_ledger_totals, self.queries, start, end)

    async def transactions(self, account_id: str, page_size: int, page_token: str) -> q.TransactionPage:
        return await self._run(q.list_transactions, self.queries, account_id, page_size, page_token)
