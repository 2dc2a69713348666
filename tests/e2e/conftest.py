"""Start the real service processes (`python -m services.<name>`) against real infra."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from deploy.run_suite import grpc_serving, probe_identity
from tests.conftest import ROOT
from tests.support import container_stack


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServiceProcess:
    name: str
    grpc_port: int
    metrics_port: int
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", f"services.{self.name}"], cwd=ROOT, env=self.env,
            stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited {self.proc.returncode}:\n{self.log_tail()}")
            if self.serving():
                return
            time.sleep(0.2)
        raise AssertionError(f"{self.name} not SERVING after 45s:\n{self.log_tail()}")

    def serving(self) -> bool:
        """Health SERVING (a service started with ADSMON_TRANSPORT=tls is probed with its own certificate)."""
        return grpc_serving(self.grpc_port, probe_identity(self.name, self.env) if self.env else None)

    def stop(self, timeout: float = 20) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"{self.name} did not stop within {timeout}s after SIGTERM") from None

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture(scope="session")
def secret_file(tmp_path_factory, auth_secret: bytes) -> Path:
    path = tmp_path_factory.mktemp("secrets") / "auth_secret"
    path.write_bytes(auth_secret)
    path.chmod(0o600)
    return path


@pytest.fixture(scope="session")
def launch(tmp_path_factory, create_database, kafka_bootstrap, secret_file) -> Iterator[Callable[..., ServiceProcess]]:
    """Factory: start a service on free ports with a fresh PostgreSQL database."""
    started: list[ServiceProcess] = []
    logs = tmp_path_factory.mktemp("logs")

    def start(name: str, **settings: str) -> ServiceProcess:
        grpc_port, metrics_port = free_port(), free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("ADSMON_")}
        env.update({
            "ADSMON_GRPC_PORT": str(grpc_port),
            "ADSMON_METRICS_PORT": str(metrics_port),
            f"ADSMON_{name.upper()}_DATABASE_URL": create_database(name),
            "ADSMON_KAFKA_BOOTSTRAP": kafka_bootstrap,
            # Explicitly plaintext (bearer tokens as the real callers): these tests reach the processes with
            # tokens; mutual TLS between processes is the chaos suite's and `make run`'s (test_run_suite).
            "ADSMON_TRANSPORT": "plaintext",
            "ADSMON_AUTH_SECRET_FILE": str(secret_file),
            "ADSMON_SHUTDOWN_GRACE_SECONDS": "5",
            "ADSMON_KAFKA_GROUP_PREFIX": os.environ["ADSMON_KAFKA_GROUP_PREFIX"],
            "ADSMON_KAFKA_TOPIC_PREFIX": os.environ["ADSMON_KAFKA_TOPIC_PREFIX"],
            "PYTHONUNBUFFERED": "1",
        })
        env.update(settings)
        svc = ServiceProcess(name, grpc_port, metrics_port, env, logs / f"{name}-{grpc_port}.log")
        svc.start()
        started.append(svc)
        return svc

    yield start
    for svc in reversed(started):
        svc.stop()


@pytest.fixture(scope="session")
def suite(request: pytest.FixtureRequest) -> dict[str, ServiceProcess]:
    """The three services, wired to each other, on fresh databases; under `make test-containers`
    (ADSMON_TEST_STACK set) the containers' services instead, reached over the network."""
    if container_stack.description() is not None:
        return container_stack.services()  # type: ignore[return-value]  # same attributes the tests read
    launch = request.getfixturevalue("launch")
    connects = launch("connects")
    billing = launch("billing", ADSMON_BILLING_CONNECTS_TARGET=connects.target)
    ads = launch("ads", ADSMON_ADS_CONNECTS_TARGET=connects.target)
    return {"connects": connects, "billing": billing, "ads": ads}
