"""Overload: connects with a low MAX_CONCURRENT_RPCS driven at ~2x what it carries.

Shows what issue 11 asks: p99 of the accepted Spends stays bounded (near the unloaded p99, not growing
with the queue), and the excess gets RESOURCE_EXHAUSTED (OVERLOADED) within milliseconds instead of
queueing until callers time out. A benchmark (make bench), not a timed test: read the figures.
"""

from __future__ import annotations

import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from adsmon.connects.v1 import connects_pb2 as pb
from sqlalchemy.engine import make_url

from services.kit.auth import mint_token
from tests.load.connects.bench_spend import (
    ACCOUNTS,
    SPEND,
    admin_engine,
    clean_up,
    scratch_db,
    seed,
    start_service,
)
from tests.load.ghz import ghz_path, protoset

LIMIT = int(os.environ.get("BENCH_OVERLOAD_LIMIT", "8"))
DURATION = os.environ.get("BENCH_OVERLOAD_DURATION", "5s")


def ghz_by_status(target: str, descriptors: str, data: str, md: dict[str, str], *, concurrency: int,
                  rps: int | None = None) -> tuple[float, dict[str, list[float]]]:
    """One ghz run: (OK calls per second, {status: per-call latencies in ms})."""
    args = [ghz_path(), "--insecure", "--call", SPEND, "-c", str(concurrency), "-O", "json", "-d", data,
            "--connections", str(min(16, concurrency)), "--protoset", descriptors, "-m", json.dumps(md), "-z", DURATION]
    if rps:
        args += ["-r", str(rps)]
    out = subprocess.run([*args, target], capture_output=True, text=True, timeout=300)
    if not out.stdout.strip():
        raise RuntimeError(f"ghz failed: {out.stderr.strip()[:500]}")
    report = json.loads(out.stdout)
    by_status: dict[str, list[float]] = {}
    for call in report.get("details") or []:
        by_status.setdefault(call.get("status") or "OK", []).append(call["latency"] / 1e6)
    ok = len(by_status.get("OK", []))
    seconds = report["total"] / 1e9 if report.get("total") else 1.0
    return ok / seconds, by_status


def p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) >= 2 else (values[0] if values else 0.0)


def main() -> int:
    admin = admin_engine()
    db = scratch_db(admin, "overload")
    secret = secrets.token_hex(32).encode()
    secret_file = Path(tempfile.mkstemp()[1])
    secret_file.write_bytes(secret)
    proc = relay = None
    try:
        db_url = make_url(os.environ["ADSMON_ADMIN_DATABASE_URL"]).set(database=db).render_as_string(
            hide_password=False)
        proc, relay, port, _ = start_service(db_url, str(secret_file),
                                             {"ADSMON_CONNECTS_MAX_CONCURRENT_RPCS": str(LIMIT)})
        accounts = [f"acct-{i}" for i in range(ACCOUNTS)]
        for start in range(0, ACCOUNTS, LIMIT):  # within the limit, or the seeding itself is shed
            seed(port, secret, accounts[start:start + LIMIT])
        target, descriptors = f"127.0.0.1:{port}", protoset(pb)
        md = {"authorization": f"Bearer {mint_token(secret, 'marketplace')}"}
        data = ('{"request_id":"{{.UUID}}","account_id":"acct-{{randomInt 0 ACCOUNTS}}","amount":1,'
                '"reason":"SPEND_REASON_PROPOSAL","reference":"job:bench"}').replace("ACCOUNTS", str(ACCOUNTS))
        carried, within = ghz_by_status(target, descriptors, data, md, concurrency=LIMIT)
        offered = max(1, int(2 * carried))
        _, over = ghz_by_status(target, descriptors, data, md, concurrency=8 * LIMIT, rps=offered)
    finally:
        clean_up([proc, relay], admin, [db], secret_file)
    ok, shed = over.get("OK", []), over.get("ResourceExhausted", [])
    others = {status: len(v) for status, v in over.items() if status not in {"OK", "ResourceExhausted"}}
    print("\n".join([
        f"## connects: overload at 2x capacity, MAX_CONCURRENT_RPCS={LIMIT}", "",
        f"- carried within the limit (c={LIMIT}, {DURATION}): **{carried:,.0f} Spends/s**, "
        f"p99 {p(within.get('OK', []), 99):.1f} ms",
        f"- offered {offered:,}/s with c={8 * LIMIT} for {DURATION}: {len(ok)} accepted (p50 {p(ok, 50):.1f} ms, "
        f"**p99 {p(ok, 99):.1f} ms**), {len(shed)} shed with RESOURCE_EXHAUSTED (p50 {p(shed, 50):.2f} ms, "
        f"**p99 {p(shed, 99):.2f} ms**), other statuses {others}", ""]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
