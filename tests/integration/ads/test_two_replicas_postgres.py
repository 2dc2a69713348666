"""Two replicas' schedulers on one PostgreSQL database: every settlement step and badge charge reaches
the ledger exactly once (claims with FOR UPDATE SKIP LOCKED, unique keys per charge)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest

from services.ads.domain.auction import CloseReason, is_placebo
from services.ads.service_layer import auctions, badges, settlement
from services.ads.service_layer.auctions import AuctionSettings, PlaceBid
from services.ads.service_layer.badges import BadgeSettings
from services.ads.service_layer.unit_of_work import NoSearches
from services.connects.client import Move
from tests.conftest import unique
from tests.unit.ads.fakes import Clock, FakeConnects

pytestmark = pytest.mark.integration
SETTINGS = AuctionSettings(placebo_share=0.0)


def run_replicas(work: Callable[[], int], replicas: int = 2) -> None:
    """Call `work` on each replica's thread until a full round finds nothing to do."""
    barrier = threading.Barrier(replicas)

    def loop() -> None:
        barrier.wait()
        idle = 0
        while idle < 3:
            idle = 0 if work() else idle + 1

    with ThreadPoolExecutor(replicas) as pool:
        for f in [pool.submit(loop) for _ in range(replicas)]:
            f.result()


def test_two_settlement_workers_capture_and_release_each_hold_once(uow_factory) -> None:
    ledger, clock = FakeConnects(), Clock()
    jobs = []
    for _ in range(40):
        while is_placebo(job := unique("job"), 0.02):
            pass
        jobs.append(job)
        for i in range(6):
            account = f"{job}-f{i}"
            ledger.fund(account, 20)
            auctions.place_bid(uow_factory, ledger, PlaceBid(unique("rq"), job, f"p{i}", account, 1 + i), clock(),
                               SETTINGS)
        auctions.close_auction(uow_factory, unique("rq"), job, CloseReason.EXPIRED, clock(), SETTINGS)
    pool = ThreadPoolExecutor(4)
    run_replicas(lambda: settlement.settle_due(uow_factory, ledger, clock, limit=16, pool=pool))
    pool.shutdown()
    sent = Counter(rid for method, rid in ledger.calls if method in ("capture", "release"))
    assert len(sent) == 40 * 6 and set(sent.values()) == {1}, "a step reached the ledger twice"
    for job in jobs:
        view = auctions.get_auction(uow_factory, job)
        assert view.status == "CLOSED"
        assert sorted(b.bid_connects for b in view.bids if b.state == "CHARGED") == [3, 4, 5, 6]
        assert sum(ledger.spent.get(f"{job}-f{i}", 0) for i in range(6)) == 18


def test_two_badge_meters_take_each_charge_once(uow_factory) -> None:
    ledger, clock = FakeConnects(), Clock()
    freelancers = [unique("badge") for _ in range(30)]
    for f in freelancers:
        ledger.fund(f, 100)
        badges.start_badge(uow_factory, ledger, unique("rq"), f, unique("cat"), 14, clock(), BadgeSettings(),
                           NoSearches())
    end = clock() + timedelta(days=3, minutes=1)
    lock = threading.Lock()

    def meter_once() -> int:
        with lock:  # both replicas see the same clock, moved by whoever finds nothing due
            now = clock()
        issued = badges.issue_due_charges(uow_factory, now)
        spent = badges.run_due_charges(uow_factory, ledger, lambda: now)
        if not issued and not spent:
            with lock:
                if clock() >= end:
                    return 0
                clock.advance(hours=6)
            return 1
        return issued + spent

    run_replicas(meter_once)
    spends = Counter(rid for method, rid in ledger.calls if method == "spend")
    assert set(spends.values()) == {1}, "a badge charge reached the ledger twice"
    for f in freelancers:
        assert ledger.spent[f] == 4  # at start, then after 1, 2 and 3 days (7 a week)


class _SlowSpend(FakeConnects):
    """Blocks the first spend until `release` is set, so another replica runs while it is in flight."""

    def __init__(self) -> None:
        super().__init__()
        self.in_flight, self.release = threading.Event(), threading.Event()

    def spend(self, request_id: str, account_id: str, amount: int, reason: str, reference: str) -> Move:
        if not self.in_flight.is_set():
            self.in_flight.set()
            assert self.release.wait(10), "the test never released the first spend"
        return super().spend(request_id, account_id, amount, reason, reference)


def test_a_charge_in_flight_past_its_lease_is_not_spent_again_by_the_other_meter(uow_factory) -> None:
    ledger, clock = _SlowSpend(), Clock()
    freelancer = unique("badge")
    ledger.fund(freelancer, 100)
    badges.start_badge(uow_factory, FakeConnects(available={freelancer: 100}), unique("rq"), freelancer,
                       unique("cat"), 14, clock(), BadgeSettings(), NoSearches())
    clock.advance(days=1, minutes=1)
    assert badges.issue_due_charges(uow_factory, clock()) == 1
    first_now = clock()
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(badges.run_due_charges, uow_factory, ledger, lambda: first_now)
        assert ledger.in_flight.wait(10)
        clock.advance(hours=6)  # the first replica's 30 s lease has long run out (a stall, or a skewed clock)
        badges.run_due_charges(uow_factory, ledger, clock)
        ledger.release.set()
        assert first.result() == 1
    assert [m for m, _ in ledger.calls] == ["spend"], "the other meter called the ledger for a charge in flight"
    assert ledger.spent[freelancer] == 1
    assert badges.run_due_charges(uow_factory, ledger, clock) == 0
