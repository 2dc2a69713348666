"""Background sweeps: holds past their ttl, lots past their date, the open-holds gauge.

Safe to run in every replica at once, and twice: each expiry runs under the
wallet's row lock and only acts on what is still due.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime

from services.connects.adapters import metrics
from services.connects.domain import commands as c
from services.connects.service_layer.handlers import SYSTEM
from services.connects.service_layer.ledger import Ledger

log = logging.getLogger(__name__)


class ExpirySweeper:
    def __init__(self, ledger: Ledger, clock: Callable[[], datetime], *, interval_seconds: float = 30.0,
                 batch: int = 500) -> None:
        self.ledger = ledger
        self.clock = clock
        self.interval = interval_seconds
        self.batch = batch
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="connects-expiry")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _loop(self) -> None:
        while True:
            await self.run_once()
            await asyncio.sleep(self.interval)

    async def run_once(self) -> tuple[int, int]:
        """One sweep of holds then lots; returns (holds expired, Connects expired)."""
        holds = await self._sweep("holds", lambda q, now: q.due_holds(now, self.batch), c.ExpireHold)
        expired = await self._sweep("lots", lambda q, now: q.due_lot_accounts(now, self.batch), c.ExpireLots)
        try:
            metrics.open_holds.set(await self.ledger.run_read(self.ledger.queries.open_holds))
        except Exception:
            log.warning("counting open holds failed", exc_info=True)
        return holds, expired

    async def _sweep(self, sweep: str, find, make) -> int:  # type: ignore[no-untyped-def]
        try:
            due = await self.ledger.run_read(find, self.ledger.queries, self.clock())
            outcomes = await asyncio.gather(*(self.ledger.execute(make(key), SYSTEM) for key in due))
        except Exception:
            metrics.expiry_runs_total.labels(sweep, "error").inc()
            log.warning("%s expiry sweep failed; next run retries", sweep, exc_info=True)
            return 0
        metrics.expiry_runs_total.labels(sweep, "ok").inc()
        return sum(o.receipt.recorded.amount for o in outcomes if o.receipt)
