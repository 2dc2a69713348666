"""The fault tests' own suite: a private PostgreSQL, Kafka broker and the three services, never the shared ones.

Everything lives under ADSMON_CHAOS_LOCAL (default <repo>/.local-chaos) on ports of its own
(ADSMON_CHAOS_PG_PORT 56532, ADSMON_CHAOS_KAFKA_PORT 19192 + controller 19193, services 50151-50153 with
metrics 9201-9203), started through deploy/local/*.sh and deploy/run_suite.py's supervisor (which restarts
a killed service with its backoff), so a test may stop the broker or the database without touching
anyone else's. The tests only run with ADSMON_CHAOS=1 (`make chaos`); `make test` skips them.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from google.protobuf import message as pb_message
from kafka.errors import KafkaError

from deploy.run_suite import Child, Supervisor, grpc_serving, port_in_use, transport_env
from deploy.sim.core import Sim, Tally, run
from deploy.sim.flows import all_flows
from services.connects.adapters.topics import MARKETPLACE_JOBS
from services.kit.identities import CallerCredentials, ChannelPool
from services.kit.kafka import encode_event, make_event, make_producer
from services.kit.tls import TlsFiles
from tests.chaos.check import Report, Target, check
from tests.conftest import ROOT

LOCAL = Path(os.environ.get("ADSMON_CHAOS_LOCAL", ROOT / ".local-chaos"))
PG_PORT = int(os.environ.get("ADSMON_CHAOS_PG_PORT", "56532"))
KAFKA_PORT = int(os.environ.get("ADSMON_CHAOS_KAFKA_PORT", "19192"))
KAFKA_CONTROLLER_PORT = int(os.environ.get("ADSMON_CHAOS_KAFKA_CONTROLLER_PORT", "19193"))
PORTS = {"connects": (50151, 9201), "ads": (50152, 9202), "billing": (50153, 9203)}
PROVIDER_PORT, WEBHOOK_PORT = 8199, 8198  # the sandbox payment provider and billing's webhook endpoint
TOPIC_PREFIX, GROUP_PREFIX = "chaos.", "chaos-"
SHARED_PORTS = {55432, 9092, 9093}  # the shared infrastructure: never ours to stop


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("ADSMON_CHAOS") == "1":
        return
    skip = pytest.mark.skip(reason="fault tests run with `make chaos` (ADSMON_CHAOS=1)")
    for item in items:
        if item.get_closest_marker("chaos") is not None:
            item.add_marker(skip)


class Infra:
    """The private PostgreSQL and Kafka, driven through the project's scripts."""

    def __init__(self) -> None:
        assert not {PG_PORT, KAFKA_PORT, KAFKA_CONTROLLER_PORT} & SHARED_PORTS, "chaos ports must not be shared ones"
        assert LOCAL.resolve() != (ROOT / ".local").resolve(), "the chaos state dir must not be the shared .local"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("ADSMON_")}
        self.env.update({"ADSMON_LOCAL": str(LOCAL), "ADSMON_PG_PORT": str(PG_PORT),
                         "ADSMON_KAFKA_PORT": str(KAFKA_PORT),
                         "ADSMON_KAFKA_CONTROLLER_PORT": str(KAFKA_CONTROLLER_PORT)})

    def script(self, name: str, action: str) -> None:
        done = subprocess.run([str(ROOT / "deploy" / "local" / f"{name}.sh"), action], env=self.env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{name}.sh {action} failed:\n{done.stderr[-3000:]}"

    def fresh(self) -> None:
        """Stop our broker and database if a previous run left them, and wipe their data: each run starts empty
        (the checker compares everything in the books). Only paths under our own state dir."""
        self.script("kafka", "stop")
        self.script("postgres", "stop")
        version = os.environ.get("ADSMON_KAFKA_VERSION", "4.1.1")
        shared_jars = ROOT / ".local" / "kafka" / version
        if not (LOCAL / "kafka" / version).exists() and (shared_jars / ".installed").exists():
            shutil.copytree(shared_jars, LOCAL / "kafka" / version)  # a copy (read only there): no Maven fetch
        shutil.rmtree(LOCAL / "kafka" / "data", ignore_errors=True)
        pg = (LOCAL / "pg").resolve()
        if (LOCAL / "pg").exists() and pg != (ROOT / ".local" / "pg").resolve():
            shutil.rmtree(pg / "data", ignore_errors=True)

    def settings(self) -> dict[str, str]:
        values = {}
        for line in (LOCAL / "env").read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep:
                values[key.strip()] = value.strip()
        return values


@dataclass
class Suite:
    """The services under supervision, the traffic, and the checker."""

    infra: Infra
    env: dict[str, str]
    supervisor: Supervisor
    credentials: CallerCredentials  # the identities' certificates: the suite talks mutual TLS
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def child(self, name: str) -> Child:
        return next(c for c in self.supervisor.children if c.name == name)

    def supervise(self) -> None:
        def loop() -> None:
            while not self._stop.is_set():
                self.supervisor.tick()
                time.sleep(0.3)
        self._thread = threading.Thread(target=loop, name="chaos-supervisor", daemon=True)
        self._thread.start()

    def wait_serving(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        for name, (grpc_port, _) in PORTS.items():
            while not grpc_serving(grpc_port, self.credentials.files("operator")):
                assert time.monotonic() < deadline, f"{name} not serving again after {timeout:.0f}s:\n" \
                    f"{self.child(name).log_tail(20)}"
                time.sleep(0.5)

    def traffic(self, seed: int, duration: float, rate: float = 12.0) -> Traffic:
        return Traffic(self, seed, duration, rate)

    def check(self, settle: float = 90.0) -> Report:
        return check(Target.from_env(self.env), settle=settle)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.supervisor.stop_all()


class Traffic:
    """The simulator (seeded) on a thread, against the chaos suite, for `duration` seconds."""

    def __init__(self, suite: Suite, seed: int, duration: float, rate: float) -> None:
        self.channels = ChannelPool(suite.credentials, {svc: f"127.0.0.1:{g}" for svc, (g, _) in PORTS.items()})
        self.producer = make_producer(suite.env["ADSMON_KAFKA_BOOTSTRAP"], client_id="adsmon-chaos-sim")
        topic = TOPIC_PREFIX + MARKETPLACE_JOBS

        def publish(key: str, payload: pb_message.Message) -> None:
            event = make_event(payload, aggregate_id=key, producer="marketplace")
            self.producer.send(topic, key=key.encode(), value=encode_event(event)).get(timeout=10)

        self.sim = Sim(seed=seed, namespace=f"chaos{seed}-{secrets.token_hex(3)}", credentials=suite.credentials,
                       channels=self.channels, publish=publish, accounts=60)
        self.tally: Tally | None = None
        self.thread = threading.Thread(target=self._run, args=(duration, rate), name="chaos-sim", daemon=True)
        self.thread.start()

    def _run(self, duration: float, rate: float) -> None:
        self.tally = run(self.sim, all_flows(), rate=rate, duration=duration)

    def finish(self) -> dict[str, int]:
        self.thread.join(timeout=300)
        assert self.tally is not None, "the simulator did not finish"
        try:  # records still queued for a broker that was down were tallied as errors by the simulator
            self.producer.close(timeout=15)
        except KafkaError as exc:  # kafka-python's close flushes first and gives up on a batch stuck in retries
            print(f"simulator's producer left unflushed records: {exc}")
        self.channels.close()
        t = self.tally
        return {"attempted": t.total(), "succeeded": t.total("ok"), "refused": t.total("refused"),
                "failed (faults)": t.total("error"), "not built": t.total("not_built"),
                "Connects moved": t.connects_moved}


@pytest.fixture(scope="session")
def chaos_suite() -> Iterator[Suite]:
    infra = Infra()
    LOCAL.mkdir(parents=True, exist_ok=True)
    secret_file = LOCAL / "secrets" / "auth_secret"
    if not secret_file.exists():
        secret_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        secret_file.write_text(secrets.token_hex(32) + "\n")
        secret_file.chmod(0o600)
    infra.fresh()
    infra.script("postgres", "start")
    infra.script("kafka", "start")
    env = dict(infra.env)
    env.update(infra.settings())
    env.update({"ADSMON_AUTH_SECRET_FILE": str(secret_file), "ADSMON_KAFKA_TOPIC_PREFIX": TOPIC_PREFIX,
                "ADSMON_KAFKA_GROUP_PREFIX": GROUP_PREFIX, "ADSMON_SHUTDOWN_GRACE_SECONDS": "5",
                "PYTHONUNBUFFERED": "1", "DB": "postgres",
                # mutual TLS with a development CA of the chaos suite's own (deploy/local/dev-ca.sh)
                **transport_env({}, local=LOCAL),
                # Reconcile leaves out what finished within this window (300 s by default): the checker
                # waits for in-flight work itself, so the run's own purchases are reconciled too.
                "ADSMON_BILLING_RECONCILE_SETTLE_SECONDS": "1"})
    for name, (grpc_port, metrics_port) in PORTS.items():
        env[f"ADSMON_{name.upper()}_GRPC_PORT"] = str(grpc_port)
        env[f"ADSMON_{name.upper()}_METRICS_PORT"] = str(metrics_port)
    env["ADSMON_ADS_CONNECTS_TARGET"] = env["ADSMON_BILLING_CONNECTS_TARGET"] = f"127.0.0.1:{PORTS['connects'][0]}"
    # The payment provider is someone else's system: its own process (the sandbox's HTTP form), so a killed
    # billing loses none of the provider's records and Reconcile compares against what it really took.
    env["ADSMON_BILLING_PAYMENT_PROVIDER_URL"] = f"http://127.0.0.1:{PROVIDER_PORT}"
    env["ADSMON_BILLING_WEBHOOK_PORT"] = str(WEBHOOK_PORT)
    (LOCAL / "log").mkdir(exist_ok=True)
    children = [Child("provider", [sys.executable, "-m", "services.billing.adapters.sandbox_provider",
                                   "--port", str(PROVIDER_PORT),
                                   "--webhook-url", f"http://127.0.0.1:{WEBHOOK_PORT}/webhooks"],
                      dict(env), LOCAL / "log" / "provider.log", lambda: port_in_use(PROVIDER_PORT),
                      f"http://127.0.0.1:{PROVIDER_PORT}")]
    credentials = CallerCredentials.from_env(env)
    assert credentials.transport == "tls", "the chaos suite runs mutual TLS"
    for name, (grpc_port, _) in PORTS.items():
        child_env = dict(env, ADSMON_GRPC_PORT=str(grpc_port), ADSMON_METRICS_PORT=str(PORTS[name][1]))
        own: TlsFiles | None = credentials.files(name)  # the probe presents the service's own certificate
        children.append(Child(name, [sys.executable, "-m", f"services.{name}"],
                              child_env, LOCAL / "log" / f"{name}.log",
                              lambda p=grpc_port, t=own: grpc_serving(p, t), f"grpc 127.0.0.1:{grpc_port} (mTLS)"))
    supervisor = Supervisor(children)
    assert supervisor.start_all(), "the chaos suite did not start; see " + str(LOCAL / "log")
    suite = Suite(infra, env, supervisor, credentials)
    suite.supervise()
    yield suite
    suite.close()
    infra.script("kafka", "stop")
    infra.script("postgres", "stop")


def run_fault(suite: Suite, seed: int, fault: Callable[[], None], *, duration: float = 45.0) -> Report:
    """Steady traffic for `duration` s with `fault` injected 8 s in; then the checker, its figures printed."""
    traffic = suite.traffic(seed, duration)
    time.sleep(8)
    fault()
    operations = traffic.finish()
    suite.wait_serving()
    report = suite.check()
    print(f"\n{report.text(operations)}")
    return report
