"""Purchase throughput end to end, next to connects' own Credit throughput in the same run.

Run by `make bench` (tests/load/run_all.py runs every tests/load/*/bench_*.py) or directly:
    set -a; source .local/env; set +a; .venv/bin/python tests/load/billing/bench_purchase.py

A PurchaseConnects does what a real one does: a purchase row (unique request_id), a charge through the
payment provider port (the sandbox, in-process, card pm_card_visa: captured at once, its webhooks delivered
twice a moment later), Connects.Credit(PURCHASE) over gRPC to the real connects service, then the completion
and its PurchaseCompleted outbox row. The baseline is ghz driving connects' own Credit (PURCHASE, as billing)
on the same connects process, interleaved with the purchase runs (ROUNDS each, medians). Target: purchase
throughput >= 0.4x Credit throughput. Afterwards every COMPLETED purchase is checked against the ledger:
one PURCHASE credit per purchase, no more, no less.
"""

from __future__ import annotations

import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

import sqlalchemy as sa
from adsmon.billing.v1 import billing_pb2
from adsmon.connects.v1 import connects_pb2
from sqlalchemy.engine import make_url

from services.kit.auth import mint_token
from tests.e2e.conftest import free_port
from tests.load.connects.bench_spend import (
    admin_engine,
    analyze,
    clean_up,
    cpu_seconds,
    scratch_db,
    spawn,
    start_service,
    wait_serving,
)
from tests.load.ghz import HEADER, median_result, protoset, run_ghz

ROOT = Path(__file__).resolve().parents[3]
ACCOUNTS = 1000
DURATION = os.environ.get("BENCH_DURATION", "10s")
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "32"))
CREDIT = "adsmon.connects.v1.ConnectsService.Credit"
PURCHASE = "adsmon.billing.v1.BillingService.PurchaseConnects"


def db_url(name: str) -> str:
    return make_url(os.environ["ADSMON_ADMIN_DATABASE_URL"]).set(database=name).render_as_string(hide_password=False)


def start_billing(url: str, secret_file: str, connects_port: int) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {**os.environ, "ADSMON_BILLING_DATABASE_URL": url, "ADSMON_BILLING_GRPC_PORT": str(port),
           "ADSMON_BILLING_METRICS_PORT": str(free_port()), "ADSMON_AUTH_SECRET_FILE": secret_file,
           "ADSMON_LOG_LEVEL": "WARNING", "ADSMON_BILLING_CONNECTS_TARGET": f"127.0.0.1:{connects_port}",
           "ADSMON_BILLING_DB_POOL_SIZE": str(CONCURRENCY), "ADSMON_BILLING_RESUME_AFTER_SECONDS": "2"}
    env.pop("ADSMON_AUTH_SECRET", None)
    proc = spawn("billing", env, "bench_billing.log")
    wait_serving(proc, port, "billing", "bench_billing.log")
    return proc, port


def exactly_once(billing_url: str, connects_url: str) -> str:
    """Every COMPLETED purchase has exactly one PURCHASE credit with its reference, and the amounts agree."""
    billing, connects = sa.create_engine(billing_url), sa.create_engine(connects_url)
    try:
        with billing.connect() as conn:
            done = dict(conn.execute(sa.text(
                "SELECT 'purchase:' || purchase_id, connects FROM purchases WHERE state = 'COMPLETED'")).all())
            states = dict(conn.execute(sa.text("SELECT state, count(*) FROM purchases GROUP BY 1")).all())
        with connects.connect() as conn:
            credits = conn.execute(sa.text(
                "SELECT reference, count(*), sum(amount) FROM ledger_transactions WHERE kind = 'CREDIT' "
                "AND source = 'PURCHASE' AND reference LIKE 'purchase:%' GROUP BY reference")).all()
    finally:
        billing.dispose()
        connects.dispose()
    by_ref = {ref: (n, total) for ref, n, total in credits}
    twice = sum(1 for n, _ in by_ref.values() if n != 1)
    missing = sum(1 for ref in done if ref not in by_ref)
    unknown = sum(1 for ref in by_ref if ref not in done)
    wrong = sum(1 for ref, c in done.items() if ref in by_ref and by_ref[ref][1] != c)
    ok = twice == missing == unknown == wrong == 0
    return (f"exactly once {'holds' if ok else 'BROKEN'}: {len(done):,} COMPLETED purchases, "
            f"{len(by_ref):,} purchase credits; credited twice {twice}, missing {missing}, without a completed "
            f"purchase {unknown}, amount differs {wrong}; purchase states {states}")


def wait_consumed(billing_url: str, connects_url: str, timeout: float = 120.0) -> float:
    """Wait until billing's revenue consumer has every ledger transaction (so a purchase run does not also pay
    for the Credit run's backlog); the seconds it took."""
    billing, connects = sa.create_engine(billing_url), sa.create_engine(connects_url)
    started = time.monotonic()
    try:
        with connects.connect() as conn:
            target = conn.execute(sa.text("SELECT count(*) FROM ledger_transactions")).scalar_one()
        while time.monotonic() - started < timeout:
            with billing.connect() as conn:
                if conn.execute(sa.text("SELECT count(*) FROM revenue_transactions")).scalar_one() >= target:
                    break
            time.sleep(0.5)
    finally:
        billing.dispose()
        connects.dispose()
    return time.monotonic() - started


def main() -> int:
    started = time.monotonic()
    admin = admin_engine()
    dbs = [scratch_db(admin, "connects"), scratch_db(admin, "billing")]
    secret = secrets.token_hex(32).encode()
    secret_file = Path(tempfile.mkstemp()[1])
    secret_file.write_bytes(secret)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        connects, relay, cport, _ = start_service(db_url(dbs[0]), str(secret_file))
        procs += [connects, relay]
        billing, bport = start_billing(db_url(dbs[1]), str(secret_file), cport)
        procs.append(billing)
        credit_data = ('{"request_id":"bench-{{.UUID}}","account_id":"acct-{{randomInt 0 N}}","amount":10,'
                       '"source":"LOT_SOURCE_PURCHASE","reference":"bench:credit"}').replace("N", str(ACCOUNTS))
        buy_data = ('{"request_id":"bench-{{.UUID}}","account_id":"acct-{{randomInt 0 N}}",'
                    '"bundle_id":"connects-10","payment_method":"pm_card_visa"}').replace("N", str(ACCOUNTS))
        as_billing = {"metadata": {"authorization": f"Bearer {mint_token(secret, 'billing')}"},
                      "protoset_file": protoset(connects_pb2)}
        as_marketplace = {"metadata": {"authorization": f"Bearer {mint_token(secret, 'marketplace')}"},
                          "protoset_file": protoset(billing_pb2)}
        run_ghz("warm-up", f"127.0.0.1:{cport}", CREDIT, data=credit_data, total=2000, concurrency=CONCURRENCY,
                **as_billing)
        run_ghz("warm-up", f"127.0.0.1:{bport}", PURCHASE, data=buy_data, total=500, concurrency=CONCURRENCY,
                **as_marketplace)
        analyze(db_url(dbs[0]), db_url(dbs[1]))
        credits, buys, waits = [], [], []
        cpu: dict[str, list[float]] = {"credit": [], "billing": [], "connects": []}  # ms per OK call
        for _ in range(ROUNDS):  # interleaved: the machine's noise falls on both alike
            before = cpu_seconds(connects.pid)
            credits.append(run_ghz(f"connects Credit(PURCHASE), c={CONCURRENCY}", f"127.0.0.1:{cport}", CREDIT,
                                   data=credit_data, duration=DURATION, concurrency=CONCURRENCY, **as_billing))
            cpu["credit"].append(1000 * (cpu_seconds(connects.pid) - before) / max(1, credits[-1].status.get("OK", 0)))
            waits.append(wait_consumed(db_url(dbs[1]), db_url(dbs[0])))
            before_b, before_c = cpu_seconds(billing.pid), cpu_seconds(connects.pid)
            buys.append(run_ghz(f"billing PurchaseConnects end to end, c={CONCURRENCY}", f"127.0.0.1:{bport}",
                                PURCHASE, data=buy_data, duration=DURATION, concurrency=CONCURRENCY,
                                **as_marketplace))
            ok = max(1, buys[-1].status.get("OK", 0))
            cpu["billing"].append(1000 * (cpu_seconds(billing.pid) - before_b) / ok)
            cpu["connects"].append(1000 * (cpu_seconds(connects.pid) - before_c) / ok)
        time.sleep(6)  # the resumer finishes what the end of a -z run left PENDING
        check = exactly_once(db_url(dbs[1]), db_url(dbs[0]))
    finally:
        clean_up(list(reversed(procs)), admin, dbs, secret_file)
    credit, buy = median_result(credits), median_result(buys)
    ratio = buy.rps / credit.rps
    print("\n".join([
        "## billing: PurchaseConnects end to end vs connects' own Credit (same run)", "",
        f"{ROUNDS} interleaved rounds of {DURATION} each, medians quoted; {ACCOUNTS} accounts; billing (one "
        "process, in-process sandbox provider) -> connects (one process + its relay) on PostgreSQL.", "",
        HEADER, credit.row(), buy.row(), "",
        f"runs (req/s): Credit {', '.join(f'{r.rps:,.0f}' for r in credits)}; "
        f"PurchaseConnects {', '.join(f'{r.rps:,.0f}' for r in buys)}", "",
        f"- purchase throughput / Credit throughput: **{ratio:.2f}x** (target >= 0.4): "
        f"{'met' if ratio >= 0.4 else 'NOT met'}",
        f"- CPU per call (medians; runs): billing {statistics.median(cpu['billing']):.2f} ms per purchase "
        f"({', '.join(f'{x:.2f}' for x in cpu['billing'])}), connects {statistics.median(cpu['connects']):.2f} ms "
        f"per purchase, connects {statistics.median(cpu['credit']):.2f} ms per Credit of its own run "
        "(the server process, relay aside)",
        f"- {check}",
        f"- before each purchase run, billing's ledger consumer caught up on the Credit run's events in "
        f"{', '.join(f'{w:.0f}s' for w in waits)} (not counted in either figure)",
        f"- status codes (median runs; ghz counts calls in flight when -z ends as Unavailable): "
        f"Credit {credit.status}, PurchaseConnects {buy.status}",
        f"- mean of the purchase runs: {statistics.mean(r.rps for r in buys):,.0f} req/s",
        f"_bench_purchase took {time.monotonic() - started:.0f}s_", ""]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
