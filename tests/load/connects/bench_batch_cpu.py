"""CPU of the ledger's batch side per Spend: `handlers.execute` over the real SQL unit of work on PostgreSQL.

No gRPC and no load generator: the calling thread's CPU time (time.thread_time) around batches of 1, 4 and
12 Spends on a scratch database (1,000 funded accounts), median of 5 rounds. It is what the batcher thread
costs per Spend at that batch size, and it holds up on a busy machine far better than throughput does.

    set -a; source .local/env; set +a; .venv/bin/python tests/load/connects/bench_batch_cpu.py
    BENCH_PROFILE=4 ...   also prints a cProfile (CPU time) of the batches of 4
"""

from __future__ import annotations

import cProfile
import os
import pstats
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from services.connects.adapters.migrations import MIGRATIONS
from services.connects.adapters.repository import SqlAlchemyLedgerUnitOfWork
from services.connects.domain import commands as c
from services.connects.domain.model import LotSource, SpendReason
from services.connects.service_layer import handlers
from services.connects.service_layer.handlers import Envelope
from services.kit.db import make_engine
from services.kit.migrations import upgrade
from tests.load.connects.bench_spend import admin_engine, drop_db, scratch_db

ACCOUNTS = [f"acct-{i}" for i in range(1000)]
SPENDS = int(os.environ.get("BENCH_SPENDS", "200"))  # per round and batch size


def now() -> datetime:
    return datetime.now(UTC)


def spends(n: int, start: int) -> list[Envelope]:
    return [Envelope(c.Spend(uuid.uuid4().hex, ACCOUNTS[(start + i) * 7919 % len(ACCOUNTS)], 1,
                             SpendReason.PROPOSAL, "job:bench"), "marketplace") for i in range(n)]


def run(engine: sa.Engine) -> None:
    def batch(envelopes: list[Envelope]) -> None:
        outcomes = handlers.execute(SqlAlchemyLedgerUnitOfWork(engine), envelopes, now())
        assert all(o.receipt is not None for o in outcomes), outcomes

    for i in range(0, len(ACCOUNTS), 100):
        batch([Envelope(c.Credit(uuid.uuid4().hex, a, 10**6, LotSource.PURCHASE, ""), "billing")
               for a in ACCOUNTS[i:i + 100]])
    for i in range(30):  # warm-up: connections, prepared statements
        batch(spends(4, i * 4))
    profiled = int(os.environ.get("BENCH_PROFILE", "0"))
    profile = cProfile.Profile(time.thread_time) if profiled else None
    n = 0
    for size in (1, 4, 12):
        reps = max(1, SPENDS // size)
        rounds = []
        for _ in range(5):
            started = time.thread_time()
            if profile is not None and size == profiled:
                profile.enable()
            for _ in range(reps):
                batch(spends(size, n))
                n += size
            if profile is not None and size == profiled:
                profile.disable()
            rounds.append((time.thread_time() - started) * 1000 / (reps * size))
        print(f"batch of {size:2d}: CPU ms per Spend {statistics.median(rounds):.3f} (rounds: "
              + ", ".join(f"{r:.3f}" for r in rounds) + ")")
    if profile is not None:
        pstats.Stats(profile).sort_stats("cumulative").print_stats(40)


def main() -> int:
    admin = admin_engine()
    name = scratch_db(admin, "batch")
    engine = make_engine(make_url(os.environ["ADSMON_ADMIN_DATABASE_URL"]).set(database=name)
                         .render_as_string(hide_password=False))
    try:
        upgrade(engine, MIGRATIONS)
        run(engine)
    finally:
        engine.dispose()
        drop_db(admin, name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
