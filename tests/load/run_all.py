"""`make bench`: every benchmark, each next to a baseline measured in the same run.

Baselines: a bare grpc.aio server (health Check, no interceptors, no DB)
driven by the same ghz settings (c=64, median of 3 runs), and, in the ledger benchmark, pgbench's
tpcb-like TPS on the same PostgreSQL. The machine is shared and noisy: read
the ratios and medians, not the absolute numbers. The report is printed and
written to .local/bench/report.md.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.e2e.conftest import free_port
from tests.load.ghz import HEADER, LoadResult, median_result, protoset, run_ghz

ROOT = Path(__file__).resolve().parents[2]
REPORT = Path(os.environ.get("ADSMON_LOCAL", ROOT / ".local")) / "bench" / "report.md"


BENCH_DURATION = os.environ.get("BENCH_DURATION", "10s")
# The settings every service benchmark drives its own RPCs with, so that the baseline is like with like.
GHZ_CONNECTIONS = 16
BARE_CALL = "grpc.health.v1.Health/Check"


@contextlib.contextmanager
def bare_server() -> Iterator[tuple[str, str]]:
    """A bare grpc.aio server (one process, no interceptors, no database), warmed up: (target, protoset)."""
    from grpc_health.v1 import health_pb2

    descriptors = protoset(health_pb2)
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests/load/echo_baseline.py"), str(port)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        run_ghz("warm-up", f"127.0.0.1:{port}", BARE_CALL, total=2000, concurrency=64, protoset_file=descriptors)
        yield f"127.0.0.1:{port}", descriptors
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def bare_run(target: str, descriptors: str, duration: str = BENCH_DURATION, concurrency: int = 64) -> LoadResult:
    """One baseline run with the same ghz settings (duration, concurrency, connections) as the service runs."""
    return run_ghz(f"bare grpc.aio Health/Check (c={concurrency})", target, BARE_CALL, duration=duration,
                   concurrency=concurrency, protoset_file=descriptors, connections=GHZ_CONNECTIONS)


def echo_baseline_results(runs: int = 3) -> list[LoadResult]:
    """`runs` baseline runs back to back (benchmarks that can, interleave `bare_run` with their own)."""
    with bare_server() as (target, descriptors):
        return [bare_run(target, descriptors) for _ in range(runs)]


def grpc_echo_baseline() -> tuple[str, float]:
    results = echo_baseline_results()
    best = median_result(results)
    text = "\n".join(["## Baseline: bare gRPC server on this machine", "",
                      f"Median of {len(results)} runs (runs: {', '.join(f'{r.rps:,.0f}' for r in results)} req/s).",
                      "", HEADER, best.row(), ""])
    return text, best.rps


def main() -> int:
    started = time.time()
    sections = [f"# adsmon benchmarks ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
                f"{os.cpu_count()} cores)", ""]
    baseline, _ = grpc_echo_baseline()
    sections.append(baseline)
    print(sections[-1], flush=True)
    # Each benchmark measures its own bare-gRPC baseline, interleaved with its rounds (run_all.bare_run).
    failed = False
    for script in sorted((ROOT / "tests/load").glob("*/bench_*.py")):
        print(f"running {script.relative_to(ROOT)} ...", flush=True)
        out = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True)
        if out.returncode != 0:
            failed = True
            sections.append(f"## {script.name} FAILED\n\n```\n{out.stderr[-3000:]}\n```\n")
        else:
            sections.append(out.stdout)
        print(sections[-1], flush=True)
    sections.append(f"_total time {time.time() - started:.0f}s_\n")
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text("\n".join(sections))
    print(f"report: {REPORT}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
