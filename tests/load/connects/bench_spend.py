"""Spend throughput and latency through gRPC on PostgreSQL, next to pgbench on the same database server.

Run by `make bench` (tests/load/run_all.py) or directly:
    set -a; source .local/env; set +a; .venv/bin/python tests/load/connects/bench_spend.py

1. pgbench tpcb-like (-c 8 -j 2 -T 15) in a scratch database: the baseline TPS.
2. The connects service (`python -m services.connects`) on a second scratch database.
3. ghz drives Spend: many accounts at full speed (c=64), many accounts at half the
   pgbench TPS (latency), one hot wallet under 64 concurrent spenders.
4. The books are checked afterwards (postings sum to zero, wallets match lots).
Prints a markdown section. Targets: Spend >= pgbench TPS, p99 < 25 ms at half
that load, >= 1,000 spends/s on one hot wallet.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

import grpc
import sqlalchemy as sa
from adsmon.connects.v1 import connects_pb2 as pb
from adsmon.connects.v1 import connects_pb2_grpc
from sqlalchemy.engine import make_url

from services.kit.auth import mint_token
from tests.e2e.conftest import free_port
from tests.load.ghz import HEADER, protoset, run_ghz

ROOT = Path(__file__).resolve().parents[3]
ACCOUNTS = 1000
DURATION = os.environ.get("BENCH_DURATION", "15s")
SPEND = "adsmon.connects.v1.ConnectsService.Spend"


def admin_engine() -> sa.Engine:
    return sa.create_engine(make_url(os.environ["ADSMON_ADMIN_DATABASE_URL"]), isolation_level="AUTOCOMMIT")


def scratch_db(admin: sa.Engine, prefix: str) -> str:
    name = f"bench_{prefix}_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    return name


def pgbench_tps(db: str) -> float:
    url = make_url(os.environ["ADSMON_ADMIN_DATABASE_URL"])
    env = {**os.environ, "PGPASSWORD": url.password or ""}
    common = ["-h", url.host or "127.0.0.1", "-p", str(url.port or 5432), "-U", url.username or "postgres"]
    subprocess.run(["pgbench", "-i", "-q", "-s", "8", *common, db], env=env, check=True, capture_output=True)
    out = subprocess.run(["pgbench", "-b", "tpcb-like", "-c", "8", "-j", "2", "-T", DURATION.rstrip("s"),
                          *common, db], env=env, check=True, capture_output=True, text=True).stdout
    match = re.search(r"tps = ([\d.]+) \(without initial connection time\)", out)
    if not match:
        raise RuntimeError(f"cannot read pgbench TPS from:\n{out}")
    return float(match.group(1))


def start_service(db_url: str, secret_file: str) -> tuple[subprocess.Popen[bytes], subprocess.Popen[bytes], int, int]:
    port, metrics_port = free_port(), free_port()
    env = {**os.environ, "ADSMON_CONNECTS_DATABASE_URL": db_url, "ADSMON_CONNECTS_GRPC_PORT": str(port),
           "ADSMON_CONNECTS_METRICS_PORT": str(metrics_port), "ADSMON_AUTH_SECRET_FILE": secret_file,
           "ADSMON_LOG_LEVEL": "WARNING", "ADSMON_CONNECTS_CONSUME_JOBS": "false",
           "ADSMON_CONNECTS_RELAY_IN_PROCESS": "false"}
    env.pop("ADSMON_AUTH_SECRET", None)
    log = open(Path(tempfile.gettempdir()) / "bench_connects.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "services.connects"], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    # The outbox relay (Kafka publishing) in its own process, as deployed: it keeps up with the
    # ledger without taking the servers' GIL.
    relay = subprocess.Popen([sys.executable, "-m", "services.connects", "relay"], cwd=ROOT,
                             env={**env, "ADSMON_CONNECTS_METRICS_PORT": str(free_port())},
                             stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"connects exited {proc.returncode}; see {log.name}")
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
                grpc.channel_ready_future(ch).result(timeout=1)
            return proc, relay, port, metrics_port
        except grpc.FutureTimeoutError:
            time.sleep(0.2)
    proc.kill()
    relay.kill()
    raise RuntimeError("connects did not start within 60s")


def seed(port: int, secret: bytes, accounts: list[str]) -> None:
    md = [("authorization", f"Bearer {mint_token(secret, 'billing')}")]
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        stub = connects_pb2_grpc.ConnectsServiceStub(ch)
        futures = [stub.Credit.future(pb.CreditRequest(request_id=f"seed-{a}", account_id=a, amount=10**12,
                                                       source=pb.LOT_SOURCE_PURCHASE), metadata=md)
                   for a in accounts]
        for f in futures:
            f.result(timeout=60)


def check_books(db_url: str) -> str:
    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        total = conn.execute(sa.text("SELECT coalesce(sum(amount), 0) FROM postings")).scalar_one()
        txs = conn.execute(sa.text("SELECT count(*) FROM ledger_transactions WHERE kind = 'SPEND'")).scalar_one()
        bad = conn.execute(sa.text(
            "SELECT count(*) FROM wallets w JOIN (SELECT account_id, sum(remaining) r FROM lots "
            "GROUP BY account_id) l USING (account_id) WHERE w.available <> l.r")).scalar_one()
    engine.dispose()
    ok = total == 0 and bad == 0
    return f"books {'balance' if ok else 'DO NOT BALANCE'}: sum(postings)={total}, wallets≠lots: {bad}, " \
           f"SPEND entries: {txs:,}"


def outbox_backlog(db_url: str) -> str:
    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        total, left = conn.execute(sa.text(
            "SELECT count(*), count(*) FILTER (WHERE published_at IS NULL) FROM outbox")).one()
    engine.dispose()
    return f"outbox: {total:,} events, {left:,} not yet published to Kafka at the end"


def batch_sizes(metrics_port: int) -> str:
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    count = float(re.search(r"^connects_batch_size_count ([\d.e+]+)$", text, re.M).group(1))  # type: ignore[union-attr]
    total = float(re.search(r"^connects_batch_size_sum ([\d.e+]+)$", text, re.M).group(1))  # type: ignore[union-attr]
    return f"mean group-commit batch: {total / max(count, 1):.1f} commands over {count:,.0f} commits"


def main() -> int:
    admin = admin_engine()
    dbs = [scratch_db(admin, "pgbench"), scratch_db(admin, "connects")]
    secret = secrets.token_hex(32).encode()
    secret_file = Path(tempfile.mkstemp()[1])
    secret_file.write_bytes(secret)
    proc = relay = None
    try:
        tps = pgbench_tps(dbs[0])
        db_url = make_url(os.environ["ADSMON_ADMIN_DATABASE_URL"]).set(database=dbs[1]) \
            .render_as_string(hide_password=False)
        proc, relay, port, metrics_port = start_service(db_url, str(secret_file))
        accounts = [f"acct-{i}" for i in range(ACCOUNTS)]
        seed(port, secret, [*accounts, "hot"])
        target, descriptors = f"127.0.0.1:{port}", protoset(pb)
        md = {"authorization": f"Bearer {mint_token(secret, 'marketplace')}"}
        many = ('{"request_id":"{{.UUID}}","account_id":"acct-{{randomInt 0 ACCOUNTS}}","amount":1,'
                '"reason":"SPEND_REASON_PROPOSAL","reference":"job:bench"}').replace("ACCOUNTS", str(ACCOUNTS))
        hot = ('{"request_id":"{{.UUID}}","account_id":"hot","amount":1,"reason":"SPEND_REASON_PROPOSAL",'
               '"reference":"job:bench"}')
        kw = {"metadata": md, "protoset_file": descriptors}
        run_ghz("warm-up", target, SPEND, data=many, total=3000, concurrency=32, **kw)
        full = run_ghz(f"Spend, {ACCOUNTS} accounts, c=64", target, SPEND, data=many, duration=DURATION,
                       concurrency=64, **kw)
        half = run_ghz(f"Spend, {ACCOUNTS} accounts, {tps / 2:,.0f}/s (half pgbench TPS)", target, SPEND,
                       data=many, duration=DURATION, concurrency=64, rps=max(1, int(tps / 2)), **kw)
        hot_r = run_ghz("Spend, one hot wallet, 64 concurrent spenders", target, SPEND, data=hot,
                        duration=DURATION, concurrency=64, **kw)
        batches = batch_sizes(metrics_port)
        books = check_books(db_url) + f"; {outbox_backlog(db_url)}"
    finally:
        for p in (proc, relay):
            if p is not None:
                p.terminate()
                p.wait(timeout=30)
        with admin.connect() as conn:
            for db in dbs:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        secret_file.unlink(missing_ok=True)
    verdict = [
        f"- Spend throughput / pgbench TPS: **{full.rps / tps:.2f}x** (target >= 1): "
        f"{'met' if full.rps >= tps else 'NOT met'}",
        f"- p99 at half pgbench load: **{half.p99_ms:.1f} ms** (target < 25 ms): "
        f"{'met' if half.p99_ms < 25 else 'NOT met'}",
        f"- one hot wallet: **{hot_r.rps:,.0f} spends/s** (target >= 1,000): "
        f"{'met' if hot_r.rps >= 1000 else 'NOT met'}",
    ]
    print("\n".join([
        "## connects: Spend through gRPC on PostgreSQL vs pgbench (same server, same run)", "",
        f"pgbench tpcb-like, scale 8, -c 8 -j 2 -T {DURATION}: **{tps:,.0f} TPS**", "",
        HEADER, full.row(), half.row(), hot_r.row(), "", *verdict, f"- {batches}", f"- {books}", "",
        f"status codes: full {full.status}, half {half.status}, hot {hot_r.status}", ""]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
