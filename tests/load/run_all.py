"""`make bench`: every benchmark, each next to a baseline measured in the same run.

Baselines: a bare grpc.aio server (health Check, no interceptors, no DB)
driven by the same ghz settings, and, in the ledger benchmark, pgbench's
tpcb-like TPS on the same PostgreSQL. The machine is shared and noisy: read
the ratios and medians, not the absolute numbers. The report is printed and
written to .local/bench/report.md.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.e2e.conftest import free_port
from tests.load.ghz import HEADER, protoset, run_ghz

ROOT = Path(__file__).resolve().parents[2]
REPORT = Path(os.environ.get("ADSMON_LOCAL", ROOT / ".local")) / "bench" / "report.md"


def grpc_echo_baseline(duration: str = "10s", concurrency: int = 32) -> str:
    from grpc_health.v1 import health_pb2

    descriptors = protoset(health_pb2)
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests/load/echo_baseline.py"), str(port)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        run_ghz("warm-up", f"127.0.0.1:{port}", "grpc.health.v1.Health/Check", total=2000,
                concurrency=concurrency, protoset_file=descriptors)
        result = run_ghz(f"bare grpc.aio Health/Check (c={concurrency})", f"127.0.0.1:{port}",
                         "grpc.health.v1.Health/Check", duration=duration, concurrency=concurrency,
                         protoset_file=descriptors)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    return "\n".join(["## Baseline: bare gRPC server on this machine", "", HEADER, result.row(), ""])


def main() -> int:
    started = time.time()
    sections = [f"# adsmon benchmarks ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
                f"{os.cpu_count()} cores)", "", grpc_echo_baseline()]
    print(sections[-1], flush=True)
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
