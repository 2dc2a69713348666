"""An ads replica serving promoted profiles for the benchmark: `promoted_server.py <db_url> <port> <campaigns>`.

Seeds `campaigns` active campaigns across 100 categories (huge budgets: the load measures serving, not
exhaustion), loads the index and serves until terminated, printing "ready" once it listens. The server is
the one the integration tests use (kit interceptors: auth, metrics, logging, error mapping).
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from services.ads.adapters.promoted_tables import campaigns
from services.kit.db import make_engine
from tests.integration.ads.promoted_support import migrate_promoted, promoted_replica, settings
from tests.unit.ads.promoted_fakes import FakeConnects

CATEGORIES = 100


def seed(url: str, count: int) -> None:
    engine = make_engine(url, pool_size=2)
    migrate_promoted(engine)
    rng = random.Random(7)
    old = datetime.now(UTC) - timedelta(hours=1)  # before the index's first poll: loaded once, not re-polled
    rows = [{"campaign_id": f"cmp-{uuid.uuid4().hex}", "freelancer_id": f"fl-{i}", "category": f"cat-{i % CATEGORIES}",
             "max_cpc": rng.randint(1, 50), "daily_budget": 10**9, "quality_bps": rng.randint(5_000, 20_000),
             "state": "ACTIVE", "revision": 1, "frequency_cap": 3, "created_at": old, "updated_at": old,
             "changed_at": old}
            for i in range(count)]
    with engine.begin() as conn:
        for start in range(0, len(rows), 5000):
            conn.execute(campaigns.insert(), rows[start:start + 5000])
    engine.dispose()


async def serve(url: str, port: int, secret: bytes) -> None:
    engine = make_engine(url, pool_size=10)
    async with promoted_replica(engine, secret, FakeConnects(), port=port,
                                settings=settings(pacing=True, sync_interval_seconds=0.5)):
        print("ready", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    db_url, grpc_port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    seed(db_url, n)
    asyncio.run(serve(db_url, grpc_port, Path(os.environ["BENCH_SECRET_FILE"]).read_bytes().strip()))
