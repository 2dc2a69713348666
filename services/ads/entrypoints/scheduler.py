"""Ads' background loops (kit Workers): closing due auctions, settlement, badge metering, gauges.

Each is safe to run in several replicas: every loop claims its rows (FOR UPDATE SKIP LOCKED with a lease)
and every ledger call carries a request id derived from the row's own key.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

from services.ads.adapters import metrics as prom
from services.ads.service_layer import auctions, badges, settlement
from services.ads.service_layer.auctions import UowFactory
from services.ads.service_layer.metrics import Metrics
from services.ads.service_layer.unit_of_work import SearchCounter
from services.connects.client import AbstractConnectsClient
from services.kit.worker import Worker

SERVICE = "ads"


class AuctionCloser(Worker):
    """Closes auctions whose 7 days are up and finishes bids left waiting for the ledger."""

    def __init__(self, uow_factory: UowFactory, connects: AbstractConnectsClient, clock: Callable[[], datetime],
                 settings: auctions.AuctionSettings, metrics: Metrics, *, interval: float = 5.0,
                 on_closed: Callable[[], None] | None = None) -> None:
        super().__init__("auction-closer", service=SERVICE, interval=interval)
        self.uow_factory, self.connects, self.clock = uow_factory, connects, clock
        self.settings, self.metrics, self.on_closed = settings, metrics, on_closed

    def run_once(self) -> bool:
        closed = auctions.close_due_auctions(self.uow_factory, self.clock(), self.settings, self.metrics)
        if closed and self.on_closed:
            self.on_closed()
        resolved = auctions.resolve_pending_bids(self.uow_factory, self.connects, self.clock(), self.settings,
                                                 self.metrics)
        return closed > 0 or resolved > 0


class Settler(Worker):
    """Runs settlement steps against the ledger until each is confirmed."""

    def __init__(self, uow_factory: UowFactory, connects: AbstractConnectsClient, clock: Callable[[], datetime],
                 metrics: Metrics, *, interval: float = 1.0, batch: int = 64, concurrency: int = 8,
                 lease: timedelta = timedelta(seconds=30)) -> None:
        super().__init__("settlement", service=SERVICE, interval=interval)
        self.uow_factory, self.connects, self.clock, self.metrics = uow_factory, connects, clock, metrics
        self.batch, self.lease = batch, lease
        self.pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="ads-settle")

    def run_once(self) -> bool:
        return settlement.settle_due(self.uow_factory, self.connects, self.clock, limit=self.batch,
                                     lease=self.lease, pool=self.pool, metrics=self.metrics) > 0

    def teardown(self) -> None:
        self.pool.shutdown(wait=True)


class BadgeMeter(Worker):
    """The pricing tick every `pricing_interval` seconds, then due charges issued and spent."""

    def __init__(self, uow_factory: UowFactory, connects: AbstractConnectsClient, clock: Callable[[], datetime],
                 settings: badges.BadgeSettings, searches: SearchCounter, metrics: Metrics, *,
                 interval: float = 5.0, pricing_interval: float = 60.0) -> None:
        super().__init__("badge-meter", service=SERVICE, interval=interval)
        self.uow_factory, self.connects, self.clock = uow_factory, connects, clock
        self.settings, self.searches, self.metrics = settings, searches, metrics
        self.pricing_interval = timedelta(seconds=pricing_interval)
        self._priced_at: datetime | None = None

    def run_once(self) -> bool:
        now = self.clock()
        if self._priced_at is None or now - self._priced_at >= self.pricing_interval:
            badges.reprice(self.uow_factory, now, self.settings.pricing, self.searches, self.metrics)
            self._priced_at = now
        issued = badges.issue_due_charges(self.uow_factory, self.clock())
        spent = badges.run_due_charges(self.uow_factory, self.connects, self.clock, self.metrics)
        return issued > 0 or spent > 0


class GaugeRefresher(Worker):
    """Gauges read from the database: auctions open, settlement backlog and its oldest step, active badges."""

    def __init__(self, uow_factory: UowFactory, clock: Callable[[], datetime], *, interval: float = 10.0) -> None:
        super().__init__("ads-gauges", service=SERVICE, interval=interval)
        self.uow_factory, self.clock = uow_factory, clock

    def run_once(self) -> bool:
        with self.uow_factory() as uow:
            open_auctions = uow.auctions.count_open()
            backlog = uow.steps.backlog()
            active = sum(uow.badges.active_counts().values())
        age = (self.clock() - backlog.oldest_created_at).total_seconds() if backlog.oldest_created_at else 0.0
        prom.set_gauges(open_auctions=open_auctions, backlog=backlog.pending, oldest_age_seconds=max(0.0, age),
                        active_badges=active)
        return False
