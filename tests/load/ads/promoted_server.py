"""An ads replica serving promoted profiles for the benchmark: `promoted_server.py <db_url> <port> <campaigns>`.

Seeds `campaigns` active campaigns across 100 categories (huge budgets: the load measures serving, not
exhaustion), loads the index and serves until terminated, printing "ready" once it listens. The server is
the one the integration tests use (kit interceptors: auth, metrics, logging, error mapping), with the
service's process settings: the GIL switch interval, and gc.freeze() once started.
"""

from __future__ import annotations

import asyncio
import gc
import os
import random
import sys
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from services.ads.adapters.promoted_tables import campaigns
from services.kit.config import ServiceConfig
from services.kit.db import make_engine
from services.kit.server import tune_process
from tests.integration.ads.promoted_support import base_config, migrate_promoted, promoted_replica, settings
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
        # As `python -m services.ads` runs (kit serve_until_signalled with gc_freeze): what is alive once the
        # server has started, the loaded index included, leaves the collector's generations.
        gc.collect()
        gc.freeze()
        print("ready", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    db_url, grpc_port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    # The service's interpreter settings (the GIL switch interval; ADSMON_GIL_SWITCH_INTERVAL_MS as for the service).
    tune_process(replace(base_config(b""), gil_switch_interval_ms=float(
        os.environ.get("ADSMON_GIL_SWITCH_INTERVAL_MS", ServiceConfig.gil_switch_interval_ms))))
    seed(db_url, n)
    asyncio.run(serve(db_url, grpc_port, Path(os.environ["BENCH_SECRET_FILE"]).read_bytes().strip()))
