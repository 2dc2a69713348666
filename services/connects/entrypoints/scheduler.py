"""Background sweeps: holds past their ttl, lots past their date, the open-holds gauge.

Safe to run in every replica at once, and twice: each expiry runs under the
wallet's row lock and only acts on what is still due. The sweeps go through
the ledger's batcher like any other command (group commit, relay wake-up).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime

from services.connects.adapters import metrics
from services.connects.domain import commands as c
from services.connects.service_layer.handlers import SYSTEM, AnyCommand, Envelope
from services.connects.service_layer.ledger import LedgerBatcher
from services.connects.service_layer.unit_of_work import AbstractLedgerQueries
from services.kit.worker import Worker

log = logging.getLogger(__name__)


class ExpirySweeper(Worker):
    """Every `interval` seconds: expire due holds, then due lots; at once again while a sweep finds a full batch."""

    def __init__(self, queries: AbstractLedgerQueries, batcher: LedgerBatcher, clock: Callable[[], datetime], *,
                 service: str, interval_seconds: float = 30.0, batch: int = 500) -> None:
        super().__init__("expiry-sweeper", service=service, interval=interval_seconds)
        self.queries = queries
        self.batcher = batcher
        self.clock = clock
        self.batch = batch

    def run_once(self) -> bool:
        """One sweep of holds then lots; True if either found a full batch (more may be due)."""
        now = self.clock()
        holds = self._sweep("holds", lambda: self.queries.due_holds(now, self.batch), c.ExpireHold)
        lots = self._sweep("lots", lambda: self.queries.due_lot_accounts(now, self.batch), c.ExpireLots)
        metrics.open_holds.set(self.queries.open_holds())
        return max(holds, lots) >= self.batch

    def _sweep(self, sweep: str, find: Callable[[], Sequence[str]], make: Callable[[str], AnyCommand]) -> int:
        try:
            due = find()
            if due:
                self.batcher.submit_and_wait([Envelope(make(key), SYSTEM) for key in due])
        except Exception:
            metrics.expiry_runs_total.labels(sweep, "error").inc()
            raise
        metrics.expiry_runs_total.labels(sweep, "ok").inc()
        return len(due)
