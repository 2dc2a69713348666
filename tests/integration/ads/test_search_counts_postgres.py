"""Two replicas flushing their search tallies into PostgreSQL at once: every search is counted once."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.engine import Engine

from services.ads.adapters.repository import SqlAlchemyAdsUnitOfWork
from services.ads.adapters.searches import SearchFlusher, SearchTally
from services.ads.domain.badge import WEEK
from services.ads.service_layer.unit_of_work import StoredSearches
from tests.conftest import unique

pytestmark = pytest.mark.integration


def test_two_replicas_flushing_the_same_hours_at_once_add_up_every_search(
        ads_engine: Engine, uow_factory: Callable[[], SqlAlchemyAdsUnitOfWork]) -> None:
    category = unique("cat")
    now = datetime.now(UTC)
    tallies = [SearchTally(), SearchTally()]
    barrier = threading.Barrier(2)

    def replica(i: int) -> int:
        flusher, added = SearchFlusher(ads_engine, tallies[i]), 0
        barrier.wait()
        for round_ in range(20):
            for k in range(50):
                tallies[i].record(category, now - timedelta(hours=k % 3, minutes=round_ % 2))
            added += flusher.flush()
        return added

    with ThreadPoolExecutor(2) as pool:
        added = list(pool.map(replica, range(2)))
    assert added == [1000, 1000]
    with uow_factory() as uow:
        assert StoredSearches().searches(uow, category, now - WEEK, now + timedelta(hours=1)) == 2000
        assert StoredSearches().searches(uow, unique("cat"), now - WEEK, now) == 0
