"""Promoted profiles' background loops (kit Workers): the index sync and the pending-click resumer."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import date, datetime, timedelta

from services.ads.adapters.promoted_index import InMemoryPlacementIndex
from services.ads.adapters.promoted_metrics import PromotedMetrics
from services.ads.service_layer.promoted import AbstractPromotedReader, ClickCharger
from services.kit.worker import Worker


class IndexSync(Worker):
    """Keeps the replica's index current: a full load first, then every `interval` the campaigns and today's
    budget rows changed since the last poll (other replicas' campaign changes and clicks). Changes made by
    this replica are in its index before their RPC answers; the poll brings the others' within `interval`."""

    GAUGE_EVERY = 5.0  # seconds between updates of the spend-against-budget gauges

    def __init__(self, reader: AbstractPromotedReader, index: InMemoryPlacementIndex, metrics: PromotedMetrics,
                 clock: Callable[[], datetime], *, interval: float) -> None:
        super().__init__("promoted-index-sync", service="ads", interval=interval)
        self.reader = reader
        self.index = index
        self.metrics = metrics
        self.clock = clock
        self._since: datetime | None = None
        self._day: date | None = None
        self._synced_at = time.monotonic()
        self._gauged_at = float("-inf")

    def run_once(self) -> bool:
        now = self.clock()
        if self._day != now.date():  # a new day: every campaign's spend starts again from the database
            self._since, self._day = None, now.date()
        campaigns, days, db_now = self.reader.changed_since(self._since, now.date())
        self.index.apply(campaigns, days)
        self._since = db_now
        self._synced_at = time.monotonic()
        if self._synced_at - self._gauged_at >= self.GAUGE_EVERY:  # a sum over every campaign: not each poll
            self._gauged_at = self._synced_at
            budget, spent = self.index.active_totals(now)
            self.metrics.index_state(len(self.index), budget, spent)
        return False


class PendingClickResumer(Worker):
    """Finishes clicks whose ledger charge was left unconfirmed (connects down, a crash between steps)."""

    def __init__(self, charger: ClickCharger, clock: Callable[[], datetime], *, older_than: timedelta,
                 interval: float = 5.0) -> None:
        super().__init__("promoted-pending-clicks", service="ads", interval=interval)
        self.charger = charger
        self.clock = clock
        self.older_than = older_than

    def run_once(self) -> bool:
        return self.charger.resume_pending_clicks(self.clock(), older_than=self.older_than) > 0
