"""PlaceBid throughput next to connects' own Hold throughput (same run), and settlement of 1,000 closed auctions.

Run by `make bench` (tests/load/run_all.py) or directly:
    set -a; source .local/env; set +a; .venv/bin/python tests/load/ads/bench_placebid.py

1. connects (as bench_spend starts it: serving process + its relay process) and ads (one process, its
   outbox relay in process, no jobs consumer) on scratch PostgreSQL databases; 1,000 funded accounts.
2. Interleaved rounds of ghz at c=64: connects Hold (1 Connect, random account) and ads PlaceBid (a new
   bid of 1..9 Connects from a random account on one of 10,000 jobs: each one a ledger Hold plus ads' two
   transactions). Target: PlaceBid >= 0.7x Hold (ads adds little on top of the ledger).
3. Settlement: 1,000 auctions with 5 bids each are placed, ads is stopped, the 1,000 auctions are closed
   through the use case on ads' database (a backlog of 5,000 steps), ads is started again and the time
   until the last step is confirmed by the ledger is measured (steps/s and auctions/s). The ledger must
   then show every hold resolved.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

import sqlalchemy as sa
from adsmon.ads.v1 import ads_pb2 as apb
from adsmon.connects.v1 import connects_pb2 as cpb
from sqlalchemy.engine import make_url

from services.ads.adapters.repository import SqlAlchemyAdsUnitOfWork
from services.ads.domain.auction import CloseReason
from services.ads.service_layer.auctions import AuctionSettings, close_auction
from services.kit.auth import mint_token
from tests.e2e.conftest import free_port
from tests.load.connects.bench_spend import (
    admin_engine,
    analyze,
    clean_up,
    scratch_db,
    seed,
    spawn,
    start_service,
    wait_serving,
)
from tests.load.ghz import HEADER, LoadResult, median_result, protoset, run_ghz

ROOT = Path(__file__).resolve().parents[3]
ACCOUNTS = 1000
JOBS = 10_000
SETTLE_AUCTIONS, SETTLE_BIDS = 1000, 5
DURATION = os.environ.get("BENCH_DURATION", "10s")
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
HOLD = "adsmon.connects.v1.ConnectsService.Hold"
PLACE_BID = "adsmon.ads.v1.AdsService.PlaceBid"


def start_ads(db_url: str, secret_file: str, connects_target: str, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "ADSMON_ADS_DATABASE_URL": db_url, "ADSMON_ADS_GRPC_PORT": str(port),
           "ADSMON_ADS_METRICS_PORT": str(free_port()), "ADSMON_AUTH_SECRET_FILE": secret_file,
           "ADSMON_LOG_LEVEL": "WARNING", "ADSMON_ADS_CONSUME_JOBS": "false",
           "ADSMON_ADS_CONNECTS_TARGET": connects_target, "ADSMON_ADS_PLACEBO_SHARE": "0"}
    env.pop("ADSMON_AUTH_SECRET", None)
    proc = spawn("ads", env, "bench_ads.log", append=True)
    wait_serving(proc, port, "ads", "bench_ads.log")
    return proc


def stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.terminate()
        proc.wait(timeout=30)


def settle_backlog(ads_url: str, start: Callable[[], subprocess.Popen[bytes]]
                   ) -> tuple[float, float, int, subprocess.Popen[bytes]]:
    """Close the settle-* auctions on ads' database while ads is down, start it, time the drain (from the start,
    and from when ads serves)."""
    engine = sa.create_engine(ads_url, pool_size=4)
    settings = AuctionSettings(placebo_share=0.0)
    now = datetime.now(UTC)
    for i in range(SETTLE_AUCTIONS):
        close_auction(lambda: SqlAlchemyAdsUnitOfWork(engine), f"bench-close-{i}", f"settle-{i}",
                      CloseReason.EXPIRED, now, settings)
    with engine.connect() as conn:
        steps = conn.execute(sa.text("SELECT count(*) FROM ads_settlement_steps WHERE status = 'PENDING'")
                             ).scalar_one()
    began = time.monotonic()
    proc = start()
    serving = time.monotonic()
    try:
        while True:
            with engine.connect() as conn:
                left = conn.execute(sa.text("SELECT count(*) FROM ads_settlement_steps WHERE status = 'PENDING'")
                                    ).scalar_one()
            if left == 0:
                break
            if time.monotonic() - began > 600:
                raise RuntimeError(f"settlement did not finish in 600s ({left} steps left)")
            time.sleep(0.1)
        took, drained = time.monotonic() - began, time.monotonic() - serving
    finally:
        engine.dispose()
    return took, drained, steps, proc


def open_holds(connects_url: str) -> int:
    engine = sa.create_engine(connects_url)
    with engine.connect() as conn:
        n = conn.execute(sa.text("SELECT count(*) FROM holds WHERE status = 'OPEN' AND reference LIKE 'job:settle-%'")
                         ).scalar_one()
    engine.dispose()
    return int(n)


def main() -> int:
    started = time.monotonic()
    admin = admin_engine()
    dbs = [scratch_db(admin, "connects"), scratch_db(admin, "ads")]
    urls = [make_url(os.environ["ADSMON_ADMIN_DATABASE_URL"]).set(database=db).render_as_string(hide_password=False)
            for db in dbs]
    secret = secrets.token_hex(32).encode()
    secret_file = Path(tempfile.mkstemp()[1])
    secret_file.write_bytes(secret)
    connects = relay = ads = None
    holds: list[LoadResult] = []
    bids: list[LoadResult] = []
    try:
        connects, relay, cport, _ = start_service(urls[0], str(secret_file))
        ads_port = free_port()
        ads = start_ads(urls[1], str(secret_file), f"127.0.0.1:{cport}", ads_port)
        accounts = [f"acct-{i}" for i in range(ACCOUNTS)]
        seed(cport, secret, accounts)
        md = {"authorization": f"Bearer {mint_token(secret, 'marketplace')}"}
        ads_md = {"authorization": f"Bearer {mint_token(secret, 'ads')}"}  # connects lets only ads hold boosts
        hold = ('{"request_id":"{{.UUID}}","account_id":"acct-{{randomInt 0 ACCOUNTS}}","amount":1,'
                '"reason":"SPEND_REASON_BOOST","reference":"job:bench-hold","ttl":"86400s"}'
                ).replace("ACCOUNTS", str(ACCOUNTS))
        bid = ('{"request_id":"{{.UUID}}","job_id":"bench-{{randomInt 0 JOBS}}","proposal_id":"{{.UUID}}",'
               '"freelancer_id":"acct-{{randomInt 0 ACCOUNTS}}","bid_connects":"{{randomInt 1 10}}"}'
               ).replace("ACCOUNTS", str(ACCOUNTS)).replace("JOBS", str(JOBS))
        ckw = {"metadata": ads_md, "protoset_file": protoset(cpb), "connections": 16}
        akw = {"metadata": md, "protoset_file": protoset(apb), "connections": 16}
        ctarget, atarget = f"127.0.0.1:{cport}", f"127.0.0.1:{ads_port}"
        run_ghz("warm-up", ctarget, HOLD, data=hold, total=1000, concurrency=32, **ckw)
        run_ghz("warm-up", atarget, PLACE_BID, data=bid, total=1000, concurrency=32, **akw)
        analyze(*urls)
        for _ in range(ROUNDS):  # interleaved, so the machine's noise falls on both alike
            holds.append(run_ghz("connects Hold (c=64)", ctarget, HOLD, data=hold, duration=DURATION,
                                 concurrency=64, **ckw))
            bids.append(run_ghz(f"ads PlaceBid, {JOBS:,} jobs (c=64)", atarget, PLACE_BID, data=bid,
                                duration=DURATION, concurrency=64, **akw))
        setup = ('{"request_id":"{{.UUID}}","job_id":"settle-{{mod .RequestNumber SETTLE}}",'
                 '"proposal_id":"{{.UUID}}","freelancer_id":"acct-{{randomInt 0 ACCOUNTS}}",'
                 '"bid_connects":"{{randomInt 1 10}}"}').replace("ACCOUNTS", str(ACCOUNTS)) \
            .replace("SETTLE", str(SETTLE_AUCTIONS))
        placed = run_ghz("settlement set-up", atarget, PLACE_BID, data=setup, total=SETTLE_AUCTIONS * SETTLE_BIDS,
                         concurrency=32, **akw)
        stop(ads)
        ads = None
        took, drained, steps, ads = settle_backlog(
            urls[1], lambda: start_ads(urls[1], str(secret_file), ctarget, ads_port))
        left_open = open_holds(urls[0])
    finally:
        clean_up([ads, connects, relay], admin, dbs, secret_file)
    h, b = median_result(holds), median_result(bids)
    ratio = b.rps / h.rps if h.rps else 0.0
    print("\n".join([
        "## ads: PlaceBid vs connects' own Hold (same run), settlement of 1,000 closed auctions", "",
        f"{ROUNDS} interleaved rounds of {DURATION} each, medians quoted; ghz c=64, 16 connections; "
        "ads is one process calling connects (one serving process + relay) over gRPC.", "",
        HEADER, h.row(), b.row(), "",
        f"runs (req/s): Hold {', '.join(f'{r.rps:,.0f}' for r in holds)}; "
        f"PlaceBid {', '.join(f'{r.rps:,.0f}' for r in bids)}", "",
        f"- PlaceBid / Hold: **{ratio:.2f}x** (target >= 0.7x): {'met' if ratio >= 0.7 else 'NOT met'}",
        f"- settlement: {SETTLE_AUCTIONS:,} closed auctions, {steps:,} steps ({placed.requests:,} bids placed, "
        f"{placed.errors} errors) confirmed in **{took:.1f} s**: **{steps / took:,.0f} steps/s**, "
        f"{SETTLE_AUCTIONS / took:,.0f} auctions/s (includes ads' start-up); from ads serving: {drained:.1f} s, "
        f"{steps / drained:,.0f} steps/s",
        f"- ledger after settlement: {left_open} open holds left on the settled jobs (must be 0)",
        f"- status codes: Hold {h.status}, PlaceBid {b.status}",
        f"_bench_placebid took {time.monotonic() - started:.0f}s_", ""]))
    return 0 if left_open == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
