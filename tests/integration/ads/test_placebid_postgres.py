"""PlaceBid on PostgreSQL: what it sends to the database (read from libpq's protocol trace, so pipelined
statements count), and request_ids recorded exactly once (the ON CONFLICT DO NOTHING inserts read their real
row count)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
from sqlalchemy.engine import Engine

from services.ads.adapters.repository import SqlAlchemyAdsUnitOfWork
from services.ads.service_layer.auctions import AuctionSettings, PlaceBid, get_auction, place_bid
from tests.conftest import unique
from tests.support.pg_wire import wire
from tests.unit.ads.fakes import FakeConnects

pytestmark = pytest.mark.integration
SETTINGS = AuctionSettings(placebo_share=0.0)
NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def funded(*accounts: str) -> FakeConnects:
    ledger = FakeConnects()
    for a in accounts:
        ledger.fund(a, 1000)
    return ledger


def test_a_new_bid_on_an_open_auction_takes_nine_statements_in_six_round_trips(
        ads_engine: Engine, uow_factory: Callable[[], SqlAlchemyAdsUnitOfWork]) -> None:
    job, a, b = unique("job"), unique("fl"), unique("fl")
    ledger = funded(a, b)
    place_bid(uow_factory, ledger, PlaceBid(unique("r"), job, unique("p"), a, 5), NOW, SETTINGS)
    with wire(ads_engine) as sent:
        result = place_bid(uow_factory, ledger, PlaceBid(unique("r"), job, unique("p"), b, 7), NOW, SETTINGS)
    assert result.bid.rank == 1 and result.bid.state == "HELD"
    # BEGIN | auction locked, its bids read, request claimed | bid inserted, COMMIT ||
    # BEGIN | auction locked, bids read | bid confirmed, request answered, BidPlaced queued, COMMIT
    assert sent == Counter({"BEGIN": 2, "SELECT": 4, "INSERT": 3, "UPDATE": 2, "COMMIT": 2, "ROUND_TRIPS": 6})


def test_a_first_bid_on_an_unseen_job_opens_its_auction_in_the_same_round_trips(
        ads_engine: Engine, uow_factory: Callable[[], SqlAlchemyAdsUnitOfWork]) -> None:
    job, a = unique("job"), unique("fl")
    ledger = funded(a)
    with wire(ads_engine) as sent:
        place_bid(uow_factory, ledger, PlaceBid(unique("r"), job, unique("p"), a, 5), NOW, SETTINGS)
    # the auction, its first bid and AuctionOpened go with the first COMMIT; BidPlaced with the second
    assert sent == Counter({"BEGIN": 2, "SELECT": 4, "INSERT": 5, "UPDATE": 2, "COMMIT": 2, "ROUND_TRIPS": 6})
    assert [b.bid_connects for b in get_auction(uow_factory, job).bids] == [5]


def test_a_replayed_bid_is_answered_from_the_stored_request(
        ads_engine: Engine, uow_factory: Callable[[], SqlAlchemyAdsUnitOfWork]) -> None:
    job, a = unique("job"), unique("fl")
    ledger = funded(a)
    cmd = PlaceBid(unique("r"), job, unique("p"), a, 5)
    first = place_bid(uow_factory, ledger, cmd, NOW, SETTINGS)
    with wire(ads_engine) as sent:
        again = place_bid(uow_factory, ledger, cmd, NOW, SETTINGS)
    assert again == first
    # BEGIN | auction locked, bids read, claim finds the request | the request read | ROLLBACK
    assert (sent["INSERT"], sent["SELECT"], sent["UPDATE"], sent["COMMIT"]) == (1, 3, 0, 0)
    assert ledger.held(a) == 5


def test_the_same_request_sent_eight_times_at_once_holds_one_bid_once(
        uow_factory: Callable[[], SqlAlchemyAdsUnitOfWork]) -> None:
    job, a = unique("job"), unique("fl")
    ledger = funded(a)
    cmd = PlaceBid(unique("r"), job, unique("p"), a, 9)
    barrier = threading.Barrier(8)

    def send() -> str:
        barrier.wait()
        try:
            return place_bid(uow_factory, ledger, cmd, NOW, SETTINGS).bid.state
        except Exception as exc:  # the refusal a concurrent duplicate may get is its answer
            return getattr(exc, "reason", type(exc).__name__)

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: send(), range(8)))
    assert set(answers) <= {"HELD", "REQUEST_IN_PROGRESS"} and "HELD" in answers
    assert ledger.held(a) == 9
    auction = get_auction(uow_factory, job)
    assert [(b.freelancer_id, b.bid_connects, b.state) for b in auction.bids] == [(a, 9, "HELD")]


def test_two_first_bids_on_an_unseen_job_at_once_open_one_auction_and_rank_both(
        uow_factory: Callable[[], SqlAlchemyAdsUnitOfWork]) -> None:
    job = unique("job")
    bidders = [unique("fl") for _ in range(6)]
    ledger = funded(*bidders)
    barrier = threading.Barrier(len(bidders))

    def bid(i: int) -> int:
        barrier.wait()
        return place_bid(uow_factory, ledger, PlaceBid(unique("r"), job, unique("p"), bidders[i], 2 + i), NOW,
                         SETTINGS).bid.bid_connects

    with ThreadPoolExecutor(len(bidders)) as pool:
        placed = sorted(pool.map(bid, range(len(bidders))))
    assert placed == [2, 3, 4, 5, 6, 7]
    auction = get_auction(uow_factory, job)
    assert [b.bid_connects for b in auction.bids] == [7, 6, 5, 4, 3, 2]
    assert sorted(b.rank for b in auction.bids) == [1, 2, 3, 4, 5, 6]
