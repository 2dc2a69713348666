"""Spend throughput and latency through gRPC on PostgreSQL, next to pgbench on the same database server.

Run by `make bench` (tests/load/run_all.py) or directly:
    set -a; source .local/env; set +a; .venv/bin/python tests/load/connects/bench_spend.py

Baseline: pgbench's built-in tpcb-like script (3 UPDATEs, 1 SELECT, 1 INSERT per transaction:
the same shape of work as a Spend) on a scratch database of the same server, scale 8 (800k
accounts: no lock contention at 64 clients), -j 2 (one thread per core), in two settings:
  * -c 8: the clients that give pgbench its best TPS on 2 cores: the target's baseline;
  * -c 64: the same client concurrency as the Spend run (like with like).
Each setting runs ROUNDS times, interleaved with the Spend runs, and the median is quoted (the
machine is shared and noisy). Then:
1. The connects service (`python -m services.connects serve --processes BENCH_PROCESSES`, default 1) with
   its outbox relay in its own process, as deployed, on a second scratch database. On this 2-core
   machine 2 processes did not raise throughput (the cores are already full: ghz, PostgreSQL, the
   relay) and halved the group-commit batch, so the hot wallet and p99 were worse; more cores: try N.
2. ghz drives Spend: 1,000 accounts at full speed (c=64); 1,000 accounts rate-limited (-r) to half
   the median pgbench -c 8 TPS (latency at half load); one hot wallet under 64 concurrent spenders.
3. The books are checked afterwards (postings sum to zero, wallets match lots).
Prints a markdown section with the ratios to the bare gRPC server (run with the same ghz settings, one
run interleaved with each round) and to pgbench. Targets (issue "ledger hot path"): Spend throughput
>= 0.35x the bare server, p99 < 25 ms at half of Spend's own capacity, one hot wallet no slower than
1,000 accounts. Exits 1 if the books do not balance afterwards. Throughput counts OK calls only.
"""

from __future__ import annotations

import os
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

import grpc
import sqlalchemy as sa
from adsmon.connects.v1 import connects_pb2 as pb
from adsmon.connects.v1 import connects_pb2_grpc
from sqlalchemy.engine import make_url

from services.kit.auth import mint_token
from tests.e2e.conftest import free_port
from tests.load.ghz import HEADER, LoadResult, median_result, protoset, run_ghz
from tests.load.run_all import bare_run, bare_server
from tests.load.stages import Hist, Key, between, describe, scrape
from tests.support.scratch_db import drop_database

ROOT = Path(__file__).resolve().parents[3]
ACCOUNTS = 1000
SEED_CONNECTS = 10**12
DURATION = os.environ.get("BENCH_DURATION", "10s")
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
PROCESSES = int(os.environ.get("BENCH_PROCESSES", "1"))
PGBENCH_SCALE = 8
SPEND = "adsmon.connects.v1.ConnectsService.Spend"


def admin_engine() -> sa.Engine:
    return sa.create_engine(make_url(os.environ["ADSMON_ADMIN_DATABASE_URL"]), isolation_level="AUTOCOMMIT")


def scratch_db(admin: sa.Engine, prefix: str) -> str:
    name = f"bench_{prefix}_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    return name


def analyze(*urls: str) -> None:
    """ANALYZE each database before the measured rounds, as pgbench vacuums before its own.

    A scratch database's tables were empty when the services' connections first ran their statements, and
    psycopg prepares a statement after its fifth run: PostgreSQL then keeps the generic plan it made for
    empty tables (sequential scans, seen with auto_explain: `Seq Scan on lots (rows=5)`, also with 15,000
    rows there) until the tables' statistics change. Autovacuum analyzes a table only on its 60 s round, part
    way through a run, so Credit throughput fell round after round (781, 458, 408 req/s) while every batch
    read all lots and idempotency keys. ANALYZE invalidates those plans; production tables carry statistics."""
    for url in urls:
        engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql("ANALYZE")
        finally:
            engine.dispose()


def drop_db(admin: sa.Engine, name: str) -> None:
    with admin.connect() as conn:
        drop_database(conn, name)


def _pgbench_common() -> tuple[dict[str, str], list[str]]:
    url = make_url(os.environ["ADSMON_ADMIN_DATABASE_URL"])
    env = {**os.environ, "PGPASSWORD": url.password or ""}
    return env, ["-h", url.host or "127.0.0.1", "-p", str(url.port or 5432), "-U", url.username or "postgres"]


def pgbench_init(db: str) -> None:
    env, common = _pgbench_common()
    subprocess.run(["pgbench", "-i", "-q", "-s", str(PGBENCH_SCALE), *common, db], env=env, check=True,
                   capture_output=True)


def pgbench_tps(db: str, clients: int) -> float:
    env, common = _pgbench_common()
    out = subprocess.run(["pgbench", "-b", "tpcb-like", "-c", str(clients), "-j", "2", "-T", DURATION.rstrip("s"),
                          *common, db], env=env, check=True, capture_output=True, text=True).stdout
    match = re.search(r"tps = ([\d.]+) \(without initial connection time\)", out)
    if not match:
        raise RuntimeError(f"cannot read pgbench TPS from:\n{out}")
    return float(match.group(1))


def spawn(service: str, env: dict[str, str], log_name: str, *args: str, append: bool = False,
          ) -> subprocess.Popen[bytes]:
    """`python -m services.<service> [args]` with its output in the temp dir's `log_name`.

    Plaintext explicitly (bearer tokens as the real callers) unless `env` says otherwise: the benchmarks
    measure the services against plaintext baselines (a bare grpc.aio server, pgbench)."""
    env = {"ADSMON_TRANSPORT": "plaintext", **env}
    log = open(Path(tempfile.gettempdir()) / log_name, "ab" if append else "wb")  # noqa: SIM115
    return subprocess.Popen([sys.executable, "-m", f"services.{service}", *args], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT)


def wait_serving(proc: subprocess.Popen[bytes], port: int, what: str, log_name: str,
                 ready: Callable[[], object] = lambda: None, timeout: float = 60) -> None:
    """Until `proc`'s gRPC port accepts a channel and `ready()` passes; kill it and raise if it never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited {proc.returncode}; see {Path(tempfile.gettempdir()) / log_name}")
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
                grpc.channel_ready_future(ch).result(timeout=1)
            ready()
            return
        except (grpc.FutureTimeoutError, OSError):
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"{what} did not start within {timeout:.0f}s")


def start_service(db_url: str, secret_file: str, extra_env: dict[str, str] | None = None,
                  ) -> tuple[subprocess.Popen[bytes], subprocess.Popen[bytes], int, int]:
    port, metrics_port = free_port(), free_port()
    env = {**os.environ, "ADSMON_CONNECTS_DATABASE_URL": db_url, "ADSMON_CONNECTS_GRPC_PORT": str(port),
           "ADSMON_CONNECTS_METRICS_PORT": str(metrics_port), "ADSMON_AUTH_SECRET_FILE": secret_file,
           "ADSMON_LOG_LEVEL": "WARNING", "ADSMON_CONNECTS_CONSUME_JOBS": "false",
           "ADSMON_CONNECTS_RELAY_IN_PROCESS": "false", "ADSMON_CONNECTS_PROCESSES": str(PROCESSES),
           # `seed` funds each account once for the whole run, above the default per-command maximum.
           "ADSMON_CONNECTS_MAX_AMOUNT": str(SEED_CONNECTS), **(extra_env or {})}
    env.pop("ADSMON_AUTH_SECRET", None)
    proc = spawn("connects", env, "bench_connects.log")
    # The outbox relay (Kafka publishing) in its own process, as deployed: it keeps up with the
    # ledger without taking the servers' GIL.
    relay = spawn("connects", {**env, "ADSMON_CONNECTS_METRICS_PORT": str(free_port())}, "bench_connects.log",
                  "relay", append=True)

    def every_process_serves_metrics() -> None:
        # Every serving process up (each serves metrics on metrics_port + i once it listens), so that
        # the load's connections spread over all of them.
        for i in range(PROCESSES):
            urllib.request.urlopen(f"http://127.0.0.1:{metrics_port + i}/metrics", timeout=1).read()

    try:
        wait_serving(proc, port, "connects", "bench_connects.log", every_process_serves_metrics)
    except RuntimeError:
        relay.kill()
        raise
    return proc, relay, port, metrics_port


def clean_up(processes: list[subprocess.Popen[bytes] | None], admin: sa.Engine, dbs: list[str],
             secret_file: Path) -> None:
    """Stop the service processes, drop the scratch databases, remove the secret file."""
    for process in processes:
        if process is not None:
            process.terminate()
            process.wait(timeout=30)
    for db in dbs:
        drop_db(admin, db)
    secret_file.unlink(missing_ok=True)


def seed(port: int, secret: bytes, accounts: list[str]) -> None:
    md = [("authorization", f"Bearer {mint_token(secret, 'billing')}")]
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        stub = connects_pb2_grpc.ConnectsServiceStub(ch)
        # In chunks below the server's in-flight limit (ADSMON_MAX_CONCURRENT_RPCS, 256), which sheds the rest.
        for start in range(0, len(accounts), 200):
            futures = [stub.Credit.future(pb.CreditRequest(request_id=f"seed-{a}", account_id=a,
                                                           amount=SEED_CONNECTS, source=pb.LOT_SOURCE_PURCHASE),
                                          metadata=md)
                       for a in accounts[start:start + 200]]
            for f in futures:
                f.result(timeout=60)


def check_books(db_url: str) -> tuple[bool, str]:
    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        total = conn.execute(sa.text("SELECT coalesce(sum(amount), 0) FROM postings")).scalar_one()
        txs = conn.execute(sa.text("SELECT count(*) FROM ledger_transactions WHERE kind = 'SPEND'")).scalar_one()
        bad = conn.execute(sa.text(
            "SELECT count(*) FROM wallets w JOIN (SELECT account_id, sum(remaining) r FROM lots "
            "GROUP BY account_id) l USING (account_id) WHERE w.available <> l.r")).scalar_one()
    engine.dispose()
    ok = total == 0 and bad == 0
    return ok, (f"books {'balance' if ok else 'DO NOT BALANCE'}: sum(postings)={total}, wallets≠lots: {bad}, "
                f"SPEND entries: {txs:,}")


def outbox_backlog(db_url: str) -> str:
    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        total, left = conn.execute(sa.text(
            "SELECT count(*), count(*) FILTER (WHERE published_at IS NULL) FROM outbox")).one()
    engine.dispose()
    return f"outbox: {total:,} events, {left:,} not yet published to Kafka at the end"


def batch_sizes(metrics_port: int) -> str:
    sizes = Hist.merged([between({}, scraped, "connects_batch_size") for scraped in scrape_all(metrics_port)])
    return f"mean group-commit batch: {sizes.total / max(sizes.count, 1):.1f} commands over {sizes.count:,.0f} commits"


def metrics_ports(metrics_port: int) -> list[int]:
    """Serving process i exports its metrics on metrics_port + i."""
    return [metrics_port + i for i in range(PROCESSES)]


def scrape_all(metrics_port: int) -> list[dict[Key, Hist]]:
    return [scrape(port) for port in metrics_ports(metrics_port)]


def stage_breakdown(before: list[dict[Key, Hist]], after: list[dict[Key, Hist]]) -> str:
    """Where a Spend's server-side time went between two scrapes (one phase), from connects' histograms."""
    def stage(name: str, **labels: str) -> str:
        return describe(Hist.merged([between(b, a, name, **labels) for b, a in zip(before, after, strict=True)]))
    return ("where a Spend's time went at half its own capacity (connects' histograms over those rounds, "
            "bucket-interpolated): gRPC handling " + stage("grpc_server_handling_seconds", grpc_method="Spend")
            + "; inside it: queue wait " + stage("batcher_queue_wait_seconds", batcher="ledger-batcher")
            + ", batch run (database + Python) " + stage("batcher_run_seconds", batcher="ledger-batcher")
            + ", hand-back to the event loop " + stage("batcher_handback_seconds", batcher="ledger-batcher"))


def cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` so far (Linux /proc), in seconds; 0 when it cannot be read."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def postgres_cpu(db_url: str, db: str) -> float:
    """CPU seconds of the PostgreSQL backends serving `db` (readable when the server runs as this user)."""
    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        pids = conn.execute(sa.text("SELECT pid FROM pg_stat_activity WHERE datname = :db AND pid <> "
                                    "pg_backend_pid()"), {"db": db}).scalars().all()
    engine.dispose()
    return sum(cpu_seconds(p) for p in pids)


def cpu_per_spend(db_url: str, db: str, pids: dict[str, int]) -> str:
    """CPU milliseconds per SPEND entry (warm-up included) by process, over the service's whole run."""
    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        spends = conn.execute(sa.text("SELECT count(*) FROM ledger_transactions WHERE kind = 'SPEND'")).scalar_one()
    engine.dispose()
    cpu = {name: cpu_seconds(pid) for name, pid in pids.items()}
    cpu["postgres backends"] = postgres_cpu(db_url, db)
    return "CPU ms per Spend (whole run incl. warm-up and seeding): " + ", ".join(
        f"{name} {1000 * sec / max(spends, 1):.3f}" for name, sec in cpu.items())


def _runs(results: list[LoadResult], what: str = "rps") -> str:
    return ", ".join(f"{r.rps:,.0f}" if what == "rps" else f"{r.p99_ms:.1f}" for r in results)


def main() -> int:
    with bare_server() as (bare_target, bare_descriptors):
        return run(bare_target, bare_descriptors)


def run(bare_target: str, bare_descriptors: str) -> int:
    started = time.monotonic()
    admin = admin_engine()
    dbs = [scratch_db(admin, "pgbench"), scratch_db(admin, "connects")]
    secret = secrets.token_hex(32).encode()
    secret_file = Path(tempfile.mkstemp()[1])
    secret_file.write_bytes(secret)
    proc = relay = None
    bares: list[LoadResult] = []
    pg8: list[float] = []
    pg64: list[float] = []
    try:
        pgbench_init(dbs[0])
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
        # 16 connections: the kernel spreads connections (not calls) over the SO_REUSEPORT processes.
        kw = {"metadata": md, "protoset_file": descriptors, "connections": 16}
        run_ghz("warm-up", target, SPEND, data=many, total=3000, concurrency=32, **kw)
        analyze(db_url)
        fulls = []
        for _ in range(ROUNDS):  # interleaved, so that the machine's noise falls on all alike
            bares.append(bare_run(bare_target, bare_descriptors))
            pg8.append(pgbench_tps(dbs[0], 8))
            pg64.append(pgbench_tps(dbs[0], 64))
            fulls.append(run_ghz(f"Spend, {ACCOUNTS} accounts, c=64", target, SPEND, data=many,
                                 duration=DURATION, concurrency=64, **kw))
        tps, tps64 = statistics.median(pg8), statistics.median(pg64)
        halves = [run_ghz(f"Spend, {ACCOUNTS} accounts, -r {tps / 2:,.0f}/s (half pgbench -c 8 TPS), c=64", target,
                          SPEND, data=many, duration=DURATION, concurrency=64, rps=max(1, int(tps / 2)), **kw)
                  for _ in range(ROUNDS)]
        # Latency when the service is not saturated: half of its own measured capacity.
        own = median_result(fulls).rps / 2
        before_owns = scrape_all(metrics_port)
        owns = [run_ghz(f"Spend, {ACCOUNTS} accounts, -r {own:,.0f}/s (half its own capacity), c=64", target,
                        SPEND, data=many, duration=DURATION, concurrency=64, rps=max(1, int(own)), **kw)
                for _ in range(ROUNDS)]
        stages = stage_breakdown(before_owns, scrape_all(metrics_port))
        hots = [run_ghz("Spend, one hot wallet, 64 concurrent spenders", target, SPEND, data=hot,
                        duration=DURATION, concurrency=64, **kw) for _ in range(ROUNDS)]
        batches = batch_sizes(metrics_port)
        balanced, books = check_books(db_url)
        books += f"; {outbox_backlog(db_url)}"
        cpu = cpu_per_spend(db_url, dbs[1], {"connects": proc.pid, "relay": relay.pid})
    finally:
        clean_up([proc, relay], admin, dbs, secret_file)
    full, hot_r = median_result(fulls), median_result(hots)
    bare = median_result(bares).rps
    half = median_result(halves, key=lambda r: r.p99_ms)
    own_r = median_result(owns, key=lambda r: r.p99_ms)
    verdict = [
        f"- Spend throughput / bare grpc.aio server (same ghz settings, interleaved): **{full.rps / bare:.2f}x** "
        f"(target >= 0.35): {'met' if full.rps >= 0.35 * bare else 'NOT met'} (bare runs: {_runs(bares)} req/s)",
        f"- p99 at half of Spend's own capacity ({own_r.rps:,.0f} req/s): **{own_r.p99_ms:.1f} ms** "
        f"(target < 25 ms): {'met' if own_r.p99_ms < 25 else 'NOT met'}",
        f"- one hot wallet / {ACCOUNTS} accounts: **{hot_r.rps / full.rps:.2f}x** ({hot_r.rps:,.0f} spends/s; "
        f"target >= 1, no slower): {'met' if hot_r.rps >= full.rps else 'NOT met'}",
        f"- Spend / pgbench tpcb-like -c 8: {full.rps / tps:.2f}x; / -c 64 (same concurrency): "
        f"{full.rps / tps64:.2f}x; p99 at half pgbench -c 8 TPS: {half.p99_ms:.1f} ms "
        f"(achieved {half.rps:,.0f} of {tps / 2:,.0f} req/s asked)",
    ]
    print("\n".join([
        "## connects: Spend through gRPC on PostgreSQL vs pgbench (same server, same run)", "",
        f"{ROUNDS} rounds of {DURATION} each, medians quoted; connects with {PROCESSES} serving process(es) "
        "(SO_REUSEPORT) + its outbox relay in its own process; ghz with 16 connections.", "",
        f"pgbench tpcb-like, scale {PGBENCH_SCALE}, -j 2, -T {DURATION}: **-c 8: {tps:,.0f} TPS** "
        f"(runs: {', '.join(f'{t:,.0f}' for t in pg8)}); -c 64: {tps64:,.0f} TPS "
        f"(runs: {', '.join(f'{t:,.0f}' for t in pg64)})", "",
        HEADER, full.row(), half.row(), own_r.row(), hot_r.row(), "",
        f"runs (req/s): full {_runs(fulls)}; half {_runs(halves)} (p99 ms: {_runs(halves, 'p99')}); "
        f"half own capacity p99 ms: {_runs(owns, 'p99')}; "
        f"hot {_runs(hots)}", "",
        *verdict, f"- {stages}", f"- {batches}", f"- {books}", f"- {cpu}", "",
        f"status codes (median runs; ghz counts the calls in flight when -z ends as Unavailable): "
        f"full {full.status}, half {half.status}, hot {hot_r.status}",
        f"_bench_spend took {time.monotonic() - started:.0f}s_", ""]))
    if not balanced:
        print(f"bench_spend: the books do not balance after the runs: {books}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
