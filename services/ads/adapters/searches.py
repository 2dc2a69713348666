"""Talent searches per category: counted in memory by each replica, summed in PostgreSQL for all of them.

`SearchTally` is what serving touches: GetPlacements adds one to (category, UTC hour) under a lock, a
dict increment, nothing else (no database write per request). `SearchFlusher` (a kit Worker) adds the
replica's counts to `ads_search_counts` every few seconds in one upsert (`searches = searches + n`), so
every replica's searches land in the same rows; a flush that fails puts its counts back for the next one,
and the worker's teardown flushes what is left when the replica stops.

`SqlSearchCountRepository` (`uow.search_counts`, read by the default `StoredSearches`) is the badge price's
demand: the searches of the hours that *start* in
`[since, until)`, summed over every replica. The sum is a function of the database's rows only, so every
replica that prices the same category at the same time sees the same demand (deterministic price), at
most one flush interval plus one hour of searches behind the clock.
"""

from __future__ import annotations

import threading
from collections import Counter
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Connection, Engine

from services.ads.adapters.tables import search_counts
from services.ads.service_layer.unit_of_work import SearchCountRepository, SearchRecorder
from services.kit import bulk
from services.kit.db import is_postgres
from services.kit.worker import Worker

HOUR = timedelta(hours=1)


def hour_of(at: datetime) -> datetime:
    """The UTC hour `at` falls in (its bucket)."""
    return at.replace(minute=0, second=0, microsecond=0)


class SearchTally(SearchRecorder):
    """This replica's searches not yet added to the database, per (category, hour)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, datetime]] = Counter()

    def record(self, category: str, at: datetime) -> None:
        key = (category, hour_of(at))
        with self._lock:
            self._counts[key] += 1

    def take(self) -> Counter[tuple[str, datetime]]:
        """Everything counted so far (the tally starts again from zero)."""
        with self._lock:
            taken, self._counts = self._counts, Counter()
        return taken

    def put_back(self, counts: Counter[tuple[str, datetime]]) -> None:
        with self._lock:
            self._counts.update(counts)

    def pending(self) -> int:
        with self._lock:
            return sum(self._counts.values())


# On PostgreSQL the rows travel as one JSON parameter of one fixed text (kit.bulk): prepared once, nothing
# compiled per flush. A multi-row `insert().values(rows)` was compiled on every flush (its text depends on the
# number of rows): 12-15 ms of CPU per flush of 100 categories, in the process that serves GetPlacements
# (about 2 ms now). The rows go in key order, so two replicas' flushes lock the shared rows in the same order.
_PG_UPSERT = (
    f"{bulk.insert_sql(search_counts, ['category', 'hour', 'searches'])} ORDER BY category, hour "
    "ON CONFLICT (category, hour) DO UPDATE SET searches = ads_search_counts.searches + EXCLUDED.searches")


def add_searches(engine: Engine, counts: Counter[tuple[str, datetime]]) -> int:
    """Add `counts` to the shared rows in one statement (one transaction); returns the searches added."""
    if not counts:
        return 0
    rows = [{"category": c, "hour": h, "searches": n} for (c, h), n in sorted(counts.items())]
    with engine.begin() as conn:
        if is_postgres(conn):
            conn.exec_driver_sql(_PG_UPSERT, (bulk.rows_json(rows),))
        else:
            insert = sqlite.insert(search_counts)
            conn.execute(insert.on_conflict_do_update(
                index_elements=[search_counts.c.category, search_counts.c.hour],
                set_={"searches": search_counts.c.searches + insert.excluded.searches}).values(rows))
    return sum(counts.values())


class SearchFlusher(Worker):
    """Adds the replica's tally to the database every `interval` seconds (and once more when stopping)."""

    def __init__(self, engine: Engine, tally: SearchTally, *, interval: float = 5.0) -> None:
        super().__init__("search-counts", service="ads", interval=interval)
        self.engine = engine
        self.tally = tally

    def flush(self) -> int:
        counts = self.tally.take()
        try:
            return add_searches(self.engine, counts)
        except Exception:
            self.tally.put_back(counts)  # counted next time: a failed flush loses no search
            raise

    def run_once(self) -> bool:
        self.flush()
        return False

    def teardown(self) -> None:
        self.flush()


class SqlSearchCountRepository(SearchCountRepository):
    """Searches in a category from the shared rows (every replica's flushed counts), on the unit of work's
    connection."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def between(self, category: str, since: datetime, until: datetime) -> int:
        t = search_counts.c
        query = sa.select(sa.func.coalesce(sa.func.sum(t.searches), 0)).where(
            t.category == category, t.hour >= since, t.hour < until)
        return int(self.conn.execute(query).scalar_one())
