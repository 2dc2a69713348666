"""The cost of one PlaceBid on PostgreSQL, in the statements it sends and the CPU it burns (no ghz, no noise
from the other processes): the figures a shared 2-core machine can measure reproducibly.

    set -a; source .local/env; set +a; .venv/bin/python tests/load/ads/placebid_cost.py [bids]

The use case runs over the real SQLAlchemy unit of work on a scratch database and a fake ledger (so only
ads' own work is counted); statements are counted by the engine's cursor events, round trips include
the pool's checkout ping, BEGIN and COMMIT. Prints statements and round trips per new bid, per raise and
per replay, and the process CPU time per new bid.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from services.ads.adapters.migrations import MIGRATIONS
from services.ads.adapters.repository import SqlAlchemyAdsUnitOfWork
from services.ads.service_layer.auctions import AuctionSettings, PlaceBid, place_bid
from services.kit.db import make_engine
from services.kit.migrations import upgrade
from tests.load.connects.bench_spend import admin_engine, drop_db, scratch_db
from tests.unit.ads.fakes import FakeConnects


class StatementCounter:
    """Counts what the engine sends: statements by their first word, plus the pool's pings."""

    def __init__(self, engine: sa.Engine) -> None:
        self.counts: Counter[str] = Counter()
        sa.event.listen(engine, "before_cursor_execute", self._statement)
        sa.event.listen(engine, "commit", self._commit)
        sa.event.listen(engine, "rollback", self._rollback)
        sa.event.listen(engine, "engine_connect", self._ping)

    def _statement(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        self.counts[statement.split(None, 1)[0].upper()] += 1

    def _commit(self, conn: Any) -> None:
        self.counts["COMMIT"] += 1

    def _rollback(self, conn: Any) -> None:
        self.counts["ROLLBACK"] += 1

    def _ping(self, conn: Any) -> None:
        self.counts["CHECKOUT"] += 1

    def take(self) -> Counter[str]:
        taken, self.counts = self.counts, Counter()
        return taken


def per_call(counts: Counter[str], calls: int) -> str:
    sql = sum(v for k, v in counts.items() if k not in ("COMMIT", "ROLLBACK", "CHECKOUT"))
    detail = ", ".join(f"{k} {v / calls:.1f}" for k, v in sorted(counts.items()))
    # round trips: statements + COMMIT + BEGIN (psycopg sends it before a transaction's first statement)
    # + the pool's pre-ping on checkout (one per unit of work)
    trips = sql + counts["COMMIT"] + counts["ROLLBACK"] + 2 * counts["CHECKOUT"]
    return f"{sql / calls:.1f} statements, ~{trips / calls:.1f} round trips ({detail})"


def main() -> int:
    bids = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    admin = admin_engine()
    db = scratch_db(admin, "adscost")
    url = make_url(os.environ["ADSMON_ADMIN_DATABASE_URL"]).set(database=db).render_as_string(hide_password=False)
    engine = make_engine(url, pool_size=2)
    try:
        upgrade(engine, MIGRATIONS)
        ledger = FakeConnects()
        for i in range(100):
            ledger.fund(f"fl-{i}", 10**9)
        settings = AuctionSettings(placebo_share=0.0)
        counter = StatementCounter(engine)

        def uow() -> SqlAlchemyAdsUnitOfWork:
            return SqlAlchemyAdsUnitOfWork(engine)

        now = datetime.now(UTC)
        jobs = [f"job-{uuid.uuid4().hex[:8]}" for _ in range(50)]
        for j in jobs:  # every job has an auction with a few bids already: the common case measured
            for k in range(3):
                place_bid(uow, ledger, PlaceBid(uuid.uuid4().hex, j, f"p-{j}-{k}", f"fl-{k}", 5), now, settings)
        counter.take()
        cmds = [PlaceBid(uuid.uuid4().hex, jobs[i % len(jobs)], f"p-{uuid.uuid4().hex[:8]}", f"fl-{i % 100}",
                         1 + i % 9) for i in range(bids)]
        cpu, wall = time.process_time(), time.perf_counter()
        for cmd in cmds:
            place_bid(uow, ledger, cmd, now, settings)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        new = counter.take()
        raises = [PlaceBid(uuid.uuid4().hex, c.job_id, c.proposal_id, c.freelancer_id, c.bid_connects + 5)
                  for c in cmds[:100]]
        for cmd in raises:
            place_bid(uow, ledger, cmd, now, settings)
        raised = counter.take()
        for cmd in cmds[:100]:
            place_bid(uow, ledger, cmd, now, settings)
        replayed = counter.take()
        print("\n".join([
            f"PlaceBid on PostgreSQL, fake ledger, {bids} new bids on {len(jobs)} open auctions:",
            f"- new bid: {per_call(new, bids)}",
            f"- raise:   {per_call(raised, len(raises))}",
            f"- replay:  {per_call(replayed, 100)}",
            f"- CPU per new bid: {cpu / bids * 1000:.2f} ms (wall {wall / bids * 1000:.2f} ms)"]))
    finally:
        engine.dispose()
        drop_db(admin, db)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
