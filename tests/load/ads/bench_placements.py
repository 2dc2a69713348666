"""GetPlacements throughput and latency through gRPC, next to the bare gRPC server of the same run.

Run by `make bench` (tests/load/run_all.py) or directly:
    set -a; source .local/env; set +a; .venv/bin/python tests/load/ads/bench_placements.py

An ads replica (tests/load/ads/promoted_server.py: the kit server with its interceptors, the in-memory
placement index loaded from PostgreSQL) with 10,000 active campaigns across 100 categories; ghz asks for 5
slots in a random category for a new viewer each time (no frequency cap binds), c=64:
1. full speed: throughput, quoted against the bare grpc.aio server with the same ghz settings (duration,
   c=64, 16 connections), one bare run interleaved with each round. Target >= 0.5x.
2. rate-limited to half of that throughput: p99 (target < 10 ms).
3. the same fixed rate with 1,000 and with 100,000 campaigns (both replicas up, rounds alternated):
   p99(100k) / p99(1k) (target <= 1.5: indexed, not scanned).
The machine is shared and noisy: read ratios and medians, not absolute figures.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

import sqlalchemy as sa
from adsmon.ads.v1 import ads_pb2 as pb
from sqlalchemy.engine import make_url

from services.kit.auth import mint_token
from tests.e2e.conftest import free_port
from tests.load.connects.bench_spend import drop_db, scratch_db
from tests.load.ghz import HEADER, LoadResult, median_result, protoset, run_ghz
from tests.load.run_all import BENCH_DURATION as DURATION
from tests.load.run_all import GHZ_CONNECTIONS, bare_run, bare_server

ROOT = Path(__file__).resolve().parents[3]
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
CALL = "adsmon.ads.v1.AdsService.GetPlacements"
DATA = '{"category":"cat-{{randomInt 0 100}}","viewer_id":"{{.UUID}}","slots":5}'


class Replica:
    """promoted_server.py on a scratch database with `campaigns` campaigns."""

    def __init__(self, admin: sa.Engine, campaigns: int, secret_file: Path) -> None:
        self.admin = admin
        self.db = scratch_db(admin, "ads")
        url = make_url(os.environ["ADSMON_ADMIN_DATABASE_URL"]).set(database=self.db)
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "tests/load/ads/promoted_server.py"),
             url.render_as_string(hide_password=False), str(self.port), str(campaigns)],
            cwd=ROOT, stdout=subprocess.PIPE, text=True,
            env={**os.environ, "BENCH_SECRET_FILE": str(secret_file), "ADSMON_LOG_LEVEL": "WARNING"})
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the ads replica with {campaigns} campaigns did not start")

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        drop_db(self.admin, self.db)


def main() -> int:
    started = time.monotonic()
    admin = sa.create_engine(make_url(os.environ["ADSMON_ADMIN_DATABASE_URL"]), isolation_level="AUTOCOMMIT")
    secret = secrets.token_hex(32).encode()
    secret_file = Path(tempfile.mkstemp()[1])
    secret_file.write_bytes(secret)
    descriptors = protoset(pb)
    kw = {"metadata": {"authorization": f"Bearer {mint_token(secret, 'marketplace')}"},
          "protoset_file": descriptors, "data": DATA, "concurrency": 64, "connections": GHZ_CONNECTIONS}
    try:
        replica = Replica(admin, 10_000, secret_file)
        try:
            target = f"127.0.0.1:{replica.port}"
            run_ghz("warm-up", target, CALL, total=3000, **kw)
            fulls, bares = [], []
            with bare_server() as (bare_target, bare_descriptors):
                for _ in range(ROUNDS):  # interleaved, so that the machine's noise falls on both alike
                    bares.append(bare_run(bare_target, bare_descriptors))
                    fulls.append(run_ghz("GetPlacements, 10,000 campaigns / 100 categories, 5 slots, c=64", target,
                                         CALL, duration=DURATION, **kw))
            full, bare_r = median_result(fulls), median_result(bares)
            bare = bare_r.rps
            half_rate = max(1, int(full.rps / 2))
            halves = [run_ghz(f"GetPlacements, 10,000 campaigns, -r {half_rate:,}/s (half its capacity)", target,
                              CALL, duration=DURATION, rps=half_rate, **kw) for _ in range(ROUNDS)]
        finally:
            replica.close()
        half = median_result(halves, key=lambda r: r.p99_ms)
        # Both sizes up at once, rounds alternated: the noise of the shared machine falls on both alike.
        sized = {size: Replica(admin, size, secret_file) for size in (1_000, 100_000)}
        runs: dict[int, list[LoadResult]] = {size: [] for size in sized}
        try:
            for r in sized.values():
                run_ghz("warm-up", f"127.0.0.1:{r.port}", CALL, total=2000, **kw)
            for _ in range(ROUNDS):
                for size, r in sized.items():
                    runs[size].append(run_ghz(f"GetPlacements, {size:,} campaigns, -r {half_rate:,}/s",
                                              f"127.0.0.1:{r.port}", CALL, duration=DURATION, rps=half_rate, **kw))
        finally:
            for r in sized.values():
                r.close()
        by_size = {size: median_result(results, key=lambda r: r.p99_ms) for size, results in runs.items()}
    finally:
        secret_file.unlink(missing_ok=True)
    ratio = full.rps / bare
    growth = by_size[100_000].p99_ms / max(by_size[1_000].p99_ms, 1e-9)
    print("\n".join([
        "## ads: GetPlacements (promoted profiles) vs the bare gRPC server (same run)", "",
        f"{ROUNDS} rounds of {DURATION} each, medians quoted; one ads replica process (kit interceptors, "
        f"in-memory index loaded from PostgreSQL); ghz c=64, {GHZ_CONNECTIONS} connections; 5 slots, "
        "random category, new viewer each call.",
        "", HEADER, bare_r.row(), full.row(), half.row(), by_size[1_000].row(), by_size[100_000].row(), "",
        f"runs (req/s): bare {', '.join(f'{r.rps:,.0f}' for r in bares)}; "
        f"full {', '.join(f'{r.rps:,.0f}' for r in fulls)}; "
        f"half p99 ms: {', '.join(f'{r.p99_ms:.1f}' for r in halves)}", "",
        f"- throughput / bare grpc.aio server ({bare:,.0f} req/s): **{ratio:.2f}x** (target >= 0.5x): "
        f"{'met' if ratio >= 0.5 else 'NOT met'}",
        f"- p99 at half its capacity ({half.rps:,.0f} req/s): **{half.p99_ms:.1f} ms** (target < 10 ms): "
        f"{'met' if half.p99_ms < 10 else 'NOT met'}",
        f"- p99 with 100,000 campaigns / with 1,000 at {half_rate:,} req/s: **{growth:.2f}x** "
        f"({by_size[100_000].p99_ms:.1f} / {by_size[1_000].p99_ms:.1f} ms; target <= 1.5x): "
        f"{'met' if growth <= 1.5 else 'NOT met'}",
        f"_bench_placements took {time.monotonic() - started:.0f}s_", ""]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
