"""The badge price's demand: GetPlacements' searches counted in memory per replica, summed in the database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from services.ads.adapters.promoted_index import InMemoryPlacementIndex
from services.ads.adapters.repository import SqlAlchemyAdsUnitOfWork
from services.ads.adapters.searches import SearchFlusher, SearchTally, add_searches
from services.ads.domain.badge import WEEK, Pricing
from services.ads.domain.promoted import Campaign, CampaignState, TokenSigner
from services.ads.service_layer import badges
from services.ads.service_layer.promoted import get_placements
from services.ads.service_layer.unit_of_work import StoredSearches
from services.kit.db import make_engine
from services.kit.errors import InvalidArgument
from tests.unit.ads.promoted_fakes import FakeMetrics

T0 = datetime(2026, 3, 2, 9, 15, tzinfo=UTC)


class Stored:
    """The default SearchCounter, each question in its own unit of work."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def searches(self, category: str, since: datetime, until: datetime) -> int:
        with SqlAlchemyAdsUnitOfWork(self.engine) as uow:
            return StoredSearches().searches(uow, category, since, until)


def test_two_replicas_tallies_add_up_in_the_database_per_category_and_hour(engine: Engine) -> None:
    a, b = SearchTally(), SearchTally()
    for i in range(30):
        a.record("design", T0 + timedelta(minutes=i))  # 09:15..09:44
    for _ in range(12):
        b.record("design", T0 + timedelta(minutes=50))  # 10:05
        b.record("writing", T0)
    SearchFlusher(engine, a).flush()
    SearchFlusher(engine, b).flush()
    SearchFlusher(engine, a).flush()  # nothing new: adds nothing
    counter = Stored(engine)
    hour = T0.replace(minute=0)
    assert counter.searches("design", hour, hour + timedelta(hours=2)) == 42
    assert counter.searches("design", hour, hour + timedelta(hours=1)) == 30
    assert counter.searches("design", hour + timedelta(hours=1), hour + timedelta(hours=2)) == 12
    assert counter.searches("writing", hour, hour + WEEK) == 12
    assert counter.searches("legal", hour, hour + WEEK) == 0
    assert a.pending() == 0 and b.pending() == 0


def test_a_flush_that_fails_keeps_its_counts_for_the_next_one(engine: Engine, tmp_path: Path) -> None:
    tally = SearchTally()
    for _ in range(5):
        tally.record("design", T0)
    unmigrated = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")  # no ads_search_counts table there
    with pytest.raises(sa.exc.OperationalError):
        SearchFlusher(unmigrated, tally).flush()
    unmigrated.dispose()
    assert tally.pending() == 5
    assert SearchFlusher(engine, tally).flush() == 5
    assert Stored(engine).searches("design", T0 - WEEK, T0 + WEEK) == 5


def test_the_week_window_counts_the_hours_that_start_inside_it(engine: Engine) -> None:
    tally = SearchTally()
    for days_ago, n in ((8, 100), (6, 7), (0, 3)):
        for _ in range(n):
            tally.record("design", T0 - timedelta(days=days_ago))
    add_searches(engine, tally.take())
    counter = Stored(engine)
    assert counter.searches("design", T0 - WEEK, T0) == 7 + 3  # 8 days ago is outside
    assert counter.searches("design", T0 - WEEK, T0.replace(minute=0)) == 7  # the current hour starts at `until`
    assert counter.searches("design", T0 - timedelta(days=6), T0) == 3  # 09:00 six days ago began before 09:15


def test_every_valid_get_placements_call_counts_one_search_in_its_category_even_when_nothing_is_served() -> None:
    index = InMemoryPlacementIndex(reserve=1, pacing=False)
    index.apply([Campaign("c1", "f1", "design", 5, 100, 10_000, CampaignState.ACTIVE, T0, T0, frequency_cap=3)], [])
    tally = SearchTally()
    signer, metrics = TokenSigner(b"k" * 32, window=timedelta(minutes=30)), FakeMetrics()
    assert len(get_placements(index, signer, metrics, "design", "v1", 3, T0, tally)) == 1
    assert get_placements(index, signer, metrics, "legal", "v1", 3, T0, tally) == []
    with pytest.raises(InvalidArgument):
        get_placements(index, signer, metrics, "design", "", 3, T0, tally)
    assert tally.take() == {("design", T0.replace(minute=0)): 1, ("legal", T0.replace(minute=0)): 1}


def test_the_weekly_price_rises_with_the_searches_all_replicas_flushed(engine: Engine) -> None:
    pricing = Pricing(base_price=7, badges_per_step=10, searches_per_step=1000, min_price=1, max_price=168)
    counter = Stored(engine)
    before = pricing.weekly_price(0, counter.searches("design", T0 - WEEK, T0))
    replicas = [SearchTally(), SearchTally()]
    for i in range(2500):
        replicas[i % 2].record("design", T0 - timedelta(hours=1 + i % 48))
    for r in replicas:
        SearchFlusher(engine, r).flush()
    after = pricing.weekly_price(0, counter.searches("design", T0 - WEEK, T0))
    assert (before, after) == (7, 9)


def test_the_badge_price_of_a_category_reads_the_flushed_searches(engine: Engine) -> None:
    tally = SearchTally()
    for _ in range(3000):
        tally.record("design", T0 - timedelta(hours=2))
    SearchFlusher(engine, tally).flush()
    with SqlAlchemyAdsUnitOfWork(engine) as uow:
        price = badges.current_price(uow, "design", Pricing(), StoredSearches(), T0)
    assert price == Pricing().weekly_price(0, 3000) == 10
