"""`make run`'s runner: the three services and Prometheus come up over mutual TLS by default (the development
CA made under ADSMON_LOCAL); a SIGKILLed service is restarted."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from adsmon.connects.v1 import connects_pb2, connects_pb2_grpc

from deploy.run_suite import grpc_serving
from services.kit.tls import TlsFiles
from tests.conftest import ROOT
from tests.e2e.conftest import free_port

pytestmark = pytest.mark.e2e
SERVICES = ("connects", "ads", "billing")


class Console:
    """run_suite.py's console, read on a thread so the test can wait for a line."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()

    def wait_for(self, pattern: str, timeout: float = 90, after: int = 0) -> re.Match[str]:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines[after:]:
                    if m := regex.search(line):
                        return m
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise AssertionError(f"no line matching {pattern!r}; console:\n" + "\n".join(self.lines))
                self._cond.wait(min(left, 0.5))


@pytest.fixture
def run_suite(tmp_path: Path, kafka_bootstrap: str, secret_file: Path) -> Iterator[tuple[Console, dict[str, int]]]:
    ports = {"prometheus": free_port()}
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADSMON_")}
    env.update({"ADSMON_LOCAL": str(tmp_path), "DB": "sqlite", "ADSMON_KAFKA_BOOTSTRAP": kafka_bootstrap,
                "ADSMON_AUTH_SECRET_FILE": str(secret_file), "ADSMON_SHUTDOWN_GRACE_SECONDS": "3",
                "ADSMON_KAFKA_GROUP_PREFIX": os.environ["ADSMON_KAFKA_GROUP_PREFIX"],
                "ADSMON_KAFKA_TOPIC_PREFIX": os.environ["ADSMON_KAFKA_TOPIC_PREFIX"],
                "ADSMON_PROM_PORT": str(ports["prometheus"]), "PYTHONUNBUFFERED": "1"})
    for name in SERVICES:
        ports[name] = free_port()
        env[f"ADSMON_{name.upper()}_GRPC_PORT"] = str(ports[name])
        env[f"ADSMON_{name.upper()}_METRICS_PORT"] = str(free_port())
    proc = subprocess.Popen([sys.executable, str(ROOT / "deploy" / "run_suite.py")], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    console = Console(proc)
    try:
        yield console, ports
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                proc.kill()


def prom_api(port: int, path: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/{path}", timeout=5) as reply:
        return json.load(reply)["data"]


def prometheus_scrapes_the_suite_with_the_project_rules(port: int) -> None:
    deadline = time.monotonic() + 30
    while True:
        targets = prom_api(port, "targets")["activeTargets"]
        if sorted(t["labels"]["job"] for t in targets if t["health"] == "up") == [f"adsmon-{s}" for s in
                                                                                 sorted(SERVICES)]:
            break
        assert time.monotonic() < deadline, f"targets not all up: {targets}"
        time.sleep(1)
    groups = {g["name"] for g in prom_api(port, "rules")["groups"]}
    assert {"adsmon-slo", "adsmon-slo-burn", "adsmon-targets"} <= groups


def only_over_mtls(tls_dir: Path, port: int) -> bool:
    """Serving to a client with the operator's certificate; a plaintext client is refused at the handshake."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch, pytest.raises(grpc.RpcError) as plain:
        connects_pb2_grpc.ConnectsServiceStub(ch).GetBalance(connects_pb2.GetBalanceRequest(account_id="a"),
                                                             timeout=5)
    assert plain.value.code() == grpc.StatusCode.UNAVAILABLE
    return grpc_serving(port, TlsFiles.in_dir(tls_dir, "operator"))


def test_the_suite_and_prometheus_come_up_and_a_killed_service_comes_back_while_the_others_serve(
        run_suite, tmp_path):
    console, ports = run_suite
    tls_dir = tmp_path / "secrets" / "tls"
    console.wait_for(rf"all up\. .*Prometheus http://127\.0\.0\.1:{ports['prometheus']}")
    console.wait_for(rf"prometheus\s+SERVING\s+http://127\.0\.0\.1:{ports['prometheus']}")
    pids = {name: int(console.wait_for(rf"{name}\s+SERVING .*\(mutual TLS\).*pid (\d+)").group(1))
            for name in SERVICES}
    console.wait_for(f"services talk mutual TLS; client certificates .* in {re.escape(str(tls_dir))}")
    assert all(only_over_mtls(tls_dir, ports[name]) for name in SERVICES)
    prometheus_scrapes_the_suite_with_the_project_rules(ports["prometheus"])

    mark = len(console.lines)
    os.kill(pids["connects"], signal.SIGKILL)
    console.wait_for(r"connects killed by SIGKILL .*restarting in 1s", after=mark)
    # The others did not stop: same processes, still serving.
    for name in ("ads", "billing"):
        os.kill(pids[name], 0)
        assert grpc_serving(ports[name], TlsFiles.in_dir(tls_dir, "operator"))
    again = int(console.wait_for(r"connects\s+SERVING again .*pid (\d+)", after=mark).group(1))
    assert again != pids["connects"]
    assert only_over_mtls(tls_dir, ports["connects"])
    assert console.proc.poll() is None, "run_suite itself must keep running"

    console.proc.send_signal(signal.SIGINT)
    assert console.proc.wait(timeout=40) == 0
    for pid in (*[pids["ads"], pids["billing"]], again):
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
