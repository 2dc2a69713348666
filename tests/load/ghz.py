"""Run ghz (gRPC load generator, Go) and read its JSON summary.

ghz leaves the Python server more CPU than a Python client would on a
2-core machine. Install: deploy/local/tools.sh install ghz.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import descriptor_pb2

ROOT = Path(__file__).resolve().parents[2]


def protoset(*modules: object) -> str:
    """Write a FileDescriptorSet of the given generated modules (and their imports) for ghz.

    Python's reflection service cannot resolve method symbols, so ghz gets the
    descriptors from a file instead of asking the server.
    """
    files: dict[str, descriptor_pb2.FileDescriptorProto] = {}

    def add(fd) -> None:  # type: ignore[no-untyped-def]
        if fd.name in files:
            return
        for dep in fd.dependencies:
            add(dep)
        proto = descriptor_pb2.FileDescriptorProto()
        fd.CopyToProto(proto)
        files[fd.name] = proto

    for module in modules:
        add(module.DESCRIPTOR)  # type: ignore[attr-defined]
    out = Path(tempfile.mkstemp(suffix=".protoset")[1])
    out.write_bytes(descriptor_pb2.FileDescriptorSet(file=list(files.values())).SerializeToString())
    return str(out)


def ghz_path() -> str:
    bindir = subprocess.run([str(ROOT / "deploy/local/tools.sh"), "path"], capture_output=True,
                            text=True, check=True).stdout.strip()
    path = Path(bindir) / "ghz"
    if not path.exists():
        subprocess.run([str(ROOT / "deploy/local/tools.sh"), "install", "ghz"], check=True)
    return str(path) if path.exists() else (shutil.which("ghz") or "ghz")


@dataclass(frozen=True)
class LoadResult:
    """One ghz run. `rps` is OK calls per second; `errors` every other status (ghz counts the calls still in
    flight when a -z duration ends as Unavailable, so a handful is expected there)."""

    name: str
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    status: dict[str, int]

    def row(self) -> str:
        return (f"| {self.name} | {self.requests} | {self.rps:,.0f} | {self.p50_ms:.2f} | "
                f"{self.p99_ms:.2f} | {self.errors} |")


HEADER = "| benchmark | requests | throughput (OK req/s) | p50 (ms) | p99 (ms) | errors |\n|---|---|---|---|---|---|"


def run_ghz(name: str, target: str, call: str, *, data: str | dict = "{}", concurrency: int = 32,
            total: int | None = None, duration: str | None = None, rps: int | None = None,
            metadata: dict[str, str] | None = None, extra: list[str] | None = None,
            protoset_file: str | None = None, connections: int = 4) -> LoadResult:
    """Run one ghz load; `data` may use ghz templates like {{.RequestNumber}}."""
    args = [ghz_path(), "--insecure", "--call", call, "-c", str(concurrency), "-O", "json",
            "-d", data if isinstance(data, str) else json.dumps(data), "--connections", str(connections)]
    if protoset_file:
        args += ["--protoset", protoset_file]
    if total:
        args += ["-n", str(total)]
    if duration:
        args += ["-z", duration]
    if rps:
        args += ["-r", str(rps)]
    if metadata:
        args += ["-m", json.dumps(metadata)]
    args += [*(extra or []), target]
    out = subprocess.run(args, capture_output=True, text=True, timeout=600)
    if out.returncode != 0 and not out.stdout.strip():
        raise RuntimeError(f"ghz failed: {out.stderr.strip()[:500]}")
    report = json.loads(out.stdout)
    lat = {d["percentage"]: d["latency"] / 1e6 for d in report.get("latencyDistribution") or []}
    status = report.get("statusCodeDistribution") or {}
    count = report["count"] or 0
    ok = status.get("OK", 0)
    # Throughput counts answered calls only: a failed call is not work done (ghz's own rps counts every call).
    rps = report["rps"] * ok / count if count else 0.0
    return LoadResult(name=name, requests=count, rps=rps, p50_ms=lat.get(50, 0.0),
                      p99_ms=lat.get(99, 0.0), errors=count - ok, status=status)


def median_result(results: list[LoadResult], key: Callable[[LoadResult], float] = lambda r: r.rps) -> LoadResult:
    """The run with the median `key` (throughput by default); its other figures go with it, runs are not mixed."""
    ordered = sorted(results, key=key)
    return ordered[(len(ordered) - 1) // 2]
