"""The cost of one PlaceBid on PostgreSQL, in the statements it sends and the CPU it burns (no ghz, no noise
from the other processes): the figures a shared 2-core machine can measure reproducibly.

    set -a; source .local/env; set +a; .venv/bin/python tests/load/ads/placebid_cost.py [bids]

The use case runs over the real SQLAlchemy unit of work on a scratch database and a fake ledger (so only
ads' own work is counted). Statements and round trips (waits for the server: BEGIN, each lone statement or
pipeline flush, COMMIT) are read from libpq's protocol trace (tests/support/pg_wire.py), so statements sent
through psycopg pipelines count too. Prints them per new bid on an open auction, per first bid on a new
job, per raise and per replay, and the process CPU time per new bid and per first bid (measured untraced).
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from sqlalchemy.engine import make_url

from services.ads.adapters.migrations import MIGRATIONS
from services.ads.adapters.repository import SqlAlchemyAdsUnitOfWork
from services.ads.service_layer.auctions import AuctionSettings, PlaceBid, place_bid
from services.kit.db import make_engine
from services.kit.migrations import upgrade
from tests.load.connects.bench_spend import admin_engine, drop_db, scratch_db
from tests.support.pg_wire import WireCounter
from tests.unit.ads.fakes import FakeConnects


def per_call(counts: Counter[str], calls: int) -> str:
    sql = sum(v for k, v in counts.items() if k not in ("ROUND_TRIPS", "BEGIN", "COMMIT", "ROLLBACK"))
    detail = ", ".join(f"{k} {v / calls:.1f}" for k, v in sorted(counts.items()) if k != "ROUND_TRIPS")
    return f"{sql / calls:.1f} statements, {counts['ROUND_TRIPS'] / calls:.1f} round trips ({detail})"


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

        def uow() -> SqlAlchemyAdsUnitOfWork:
            return SqlAlchemyAdsUnitOfWork(engine)

        def bid(job: str, i: int, amount: int = 0) -> PlaceBid:
            return PlaceBid(uuid.uuid4().hex, job, f"p-{uuid.uuid4().hex[:8]}", f"fl-{i % 100}", amount or 1 + i % 9)

        def run(cmds: list[PlaceBid]) -> tuple[float, float]:
            cpu, wall = time.process_time(), time.perf_counter()
            for cmd in cmds:
                place_bid(uow, ledger, cmd, now, settings)
            return (time.process_time() - cpu) / len(cmds) * 1000, (time.perf_counter() - wall) / len(cmds) * 1000

        now = datetime.now(UTC)
        jobs = [f"job-{uuid.uuid4().hex[:8]}" for _ in range(50)]
        run([bid(j, k, 5) for j in jobs for k in range(3)])  # every job has a few bids: the common case measured
        # CPU untraced (the trace costs CPU of its own), then the wire counts of the same kinds of bids
        cpu, wall = run([bid(jobs[i % len(jobs)], i) for i in range(bids)])
        first_cpu, first_wall = run([bid(f"job-{uuid.uuid4().hex}", i) for i in range(bids)])
        counter = WireCounter(engine)
        cmds = [bid(jobs[i % len(jobs)], i) for i in range(100)]
        run(cmds)
        new = counter.take()
        run([bid(f"job-{uuid.uuid4().hex}", i) for i in range(100)])
        first = counter.take()
        run([PlaceBid(uuid.uuid4().hex, c.job_id, c.proposal_id, c.freelancer_id, c.bid_connects + 5) for c in cmds])
        raised = counter.take()
        run(cmds)
        replayed = counter.take()
        counter.close()
        print("\n".join([
            f"PlaceBid on PostgreSQL, fake ledger, new bids on {len(jobs)} open auctions and first bids on new jobs:",
            f"- new bid:           {per_call(new, 100)}",
            f"- first bid on a job: {per_call(first, 100)}",
            f"- raise:             {per_call(raised, 100)}",
            f"- replay:            {per_call(replayed, 100)}",
            f"- CPU per new bid: {cpu:.2f} ms (wall {wall:.2f} ms); per first bid on a job: {first_cpu:.2f} ms "
            f"(wall {first_wall:.2f} ms); {bids} of each"]))
    finally:
        engine.dispose()
        drop_db(admin, db)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
