"""`make run`: start connects, ads and billing as processes, wait until healthy, stop on Ctrl-C.

Infra (PostgreSQL, Kafka) is started by the Makefile before this runs. Each
service logs JSON lines to .local/log/<service>.log. With DB=sqlite (the
default) each service keeps an embedded SQLite database under .local/; with
DB=postgres it uses the local PostgreSQL cluster.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
LOCAL = Path(os.environ.get("ADSMON_LOCAL", ROOT / ".local"))
SERVICES = {"connects": (50051, 9101), "ads": (50052, 9102), "billing": (50053, 9103)}


def service_env(name: str) -> dict[str, str]:
    env = dict(os.environ)
    if os.environ.get("DB", "sqlite") == "sqlite":
        env[f"ADSMON_{name.upper()}_DATABASE_URL"] = f"sqlite:///{LOCAL}/{name}.db"
    return env


def healthy(port: int) -> bool:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        try:
            reply = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=1)
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def main() -> int:
    (LOCAL / "log").mkdir(parents=True, exist_ok=True)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    for name in SERVICES:
        log = open(LOCAL / "log" / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
        procs[name] = subprocess.Popen(
            [sys.executable, "-m", f"services.{name}"], cwd=ROOT, env=service_env(name),
            stdout=log, stderr=subprocess.STDOUT)
    stop = False

    def request_stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    deadline = time.monotonic() + 60
    pending = set(SERVICES)
    while pending and not stop and time.monotonic() < deadline:
        for name in sorted(pending):
            if procs[name].poll() is not None:
                print(f"{name} exited with {procs[name].returncode}; see {LOCAL}/log/{name}.log")
                stop = True
            elif healthy(SERVICES[name][0]):
                grpc_port, metrics_port = SERVICES[name]
                print(f"{name:9s} SERVING  grpc 127.0.0.1:{grpc_port}  "
                      f"metrics http://127.0.0.1:{metrics_port}/metrics  log {LOCAL}/log/{name}.log")
                pending.discard(name)
        time.sleep(0.3)
    if pending and not stop:
        print(f"not healthy after 60s: {', '.join(sorted(pending))}")
        stop = True
    if not stop:
        print("all services up; Ctrl-C stops everything (services, then Kafka and PostgreSQL unless KEEP_INFRA=1)")
    while not stop and all(p.poll() is None for p in procs.values()):
        time.sleep(0.5)
    for proc in procs.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    code = 0
    for name, proc in procs.items():
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = 1
        print(f"{name} stopped ({proc.returncode})")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
