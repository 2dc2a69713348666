"""`make run`: connects, ads, billing and a Prometheus watching them, supervised until Ctrl-C.

Infra (PostgreSQL, Kafka) is started by the Makefile before this runs. Each
child logs to .local/log/<name>.log. With DB=sqlite (the default) each service
keeps an embedded SQLite database under .local/; with DB=postgres it uses the
local PostgreSQL cluster.

Prometheus (the Debian package `make infra` installs) runs with
deploy/prometheus/prometheus.yml and its alert rules, its scrape targets
rewritten to the ports this run uses, on 127.0.0.1:$ADSMON_PROM_PORT (9090).

A supervisor, not a launcher: a child that fails to come up at start-up
stops the run (a wrong setting should be seen, not retried), but once the
suite is up a child that dies is restarted with exponential backoff (1s, 2s,
4s ... 30s; reset after a minute of uptime) and the console says so; the
others keep serving.

Secure by default: the services talk mutual TLS with the development CA's certificates
(.local/secrets/tls, made by deploy/local/dev-ca.sh if missing; ADSMON_TLS_DIR names another directory),
and the readiness probes present each service's own certificate. ADSMON_TRANSPORT=plaintext runs them
with bearer tokens instead (local runs only).

Ports: ADSMON_<SVC>_GRPC_PORT, ADSMON_<SVC>_METRICS_PORT, ADSMON_PROM_PORT.
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from services.kit import backoff  # noqa: E402
from services.kit.config import Env, transport_from_env  # noqa: E402
from services.kit.startup import StartupError  # noqa: E402
from services.kit.tls import TlsFiles, channel_credentials  # noqa: E402

LOCAL = Path(os.environ.get("ADSMON_LOCAL", ROOT / ".local"))
SERVICES = {"connects": (50051, 9101), "ads": (50052, 9102), "billing": (50053, 9103)}
PROM_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
START_TIMEOUT = 60.0
BACKOFF_INITIAL, BACKOFF_MAX = 1.0, 30.0
STABLE_AFTER = 60.0  # a child up this long has its backoff reset


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def env_port(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise SystemExit(f"{name}={value!r} is not a port number")
    return int(value)


def service_ports() -> dict[str, tuple[int, int]]:
    return {name: (env_port(f"ADSMON_{name.upper()}_GRPC_PORT", grpc_port),
                   env_port(f"ADSMON_{name.upper()}_METRICS_PORT", metrics_port))
            for name, (grpc_port, metrics_port) in SERVICES.items()}


def port_in_use(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def grpc_serving(port: int, tls: TlsFiles | None = None) -> bool:
    """The server on `port` answers health SERVING (under mutual TLS presenting `tls`' certificate)."""
    target = f"127.0.0.1:{port}"
    with grpc.secure_channel(target, channel_credentials(tls)) if tls else grpc.insecure_channel(target) as ch:
        try:
            reply = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=1)
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as reply:  # noqa: S310 - loopback URL we built
            return bool(reply.status == 200)
    except OSError:
        return False


def exit_text(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


@dataclass
class Child:
    """One supervised process: how to start it, how to tell it is ready, what to print when it is."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    ready: Callable[[], bool]
    address: str
    cwd: Path = ROOT
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    serving: bool = False
    restarts: int = 0
    failures: int = 0  # consecutive short-lived runs: the backoff exponent
    restart_at: float | None = None
    warned_slow: bool = field(default=False, repr=False)

    def start(self) -> None:
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(self.argv, cwd=self.cwd, env=self.env, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        self.started_at = time.monotonic()
        self.serving = False
        self.warned_slow = False
        self.restart_at = None

    def exited(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def log_tail(self, lines: int = 8) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return ""
        return "\n".join(f"    {line[:300]}" for line in text)

    def line(self) -> str:
        pid = self.proc.pid if self.proc else "-"
        return f"{self.address}  pid {pid}  log {self.log_path}"


def transport_env(environ: dict[str, str] | None = None, local: Path | None = None) -> dict[str, str]:
    """The services' transport settings: mutual TLS with the development CA (made in <local>/secrets/tls when
    missing) unless ADSMON_TRANSPORT=plaintext, or ADSMON_TLS_DIR / ADSMON_<SVC>_TLS_*_FILE name certificates
    of their own."""
    env = dict(os.environ if environ is None else environ)
    if env.get("ADSMON_TRANSPORT", "").strip().lower() == "plaintext":
        return {"ADSMON_TRANSPORT": "plaintext"}
    if env.get("ADSMON_TLS_DIR") or any("_TLS_" in key and key.endswith("_FILE") for key in env):
        return {"ADSMON_TRANSPORT": "tls"}
    tls_dir = (local or LOCAL) / "secrets" / "tls"
    made = subprocess.run([str(ROOT / "deploy" / "local" / "dev-ca.sh"), str(tls_dir)], capture_output=True,
                          text=True)
    if made.returncode != 0:
        raise SystemExit(f"cannot make the development CA in {tls_dir}: {made.stderr.strip()}")
    return {"ADSMON_TRANSPORT": "tls", "ADSMON_TLS_DIR": str(tls_dir)}


def probe_identity(name: str, env: dict[str, str]) -> TlsFiles | None:
    """The certificate the readiness probe of `name` presents: the service's own (None on plaintext)."""
    try:
        return transport_from_env(Env(name, env), name)[1]
    except StartupError as exc:
        raise SystemExit(f"{name}: {exc}") from None


def service_env(name: str, grpc_port: int, metrics_port: int, connects_port: int,
                transport: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(transport or {})
    if name != "connects":
        env.setdefault(f"ADSMON_{name.upper()}_CONNECTS_TARGET", f"127.0.0.1:{connects_port}")
    env[f"ADSMON_{name.upper()}_GRPC_PORT"] = str(grpc_port)
    env[f"ADSMON_{name.upper()}_METRICS_PORT"] = str(metrics_port)
    env.setdefault("PYTHONUNBUFFERED", "1")
    if os.environ.get("DB", "sqlite") == "sqlite":
        env[f"ADSMON_{name.upper()}_DATABASE_URL"] = f"sqlite:///{LOCAL}/{name}.db"
    return env


def scrape_config(metrics_ports: dict[str, int]) -> dict[str, object]:
    """deploy/prometheus/prometheus.yml with absolute rule file paths, scraping only the services in
    `metrics_ports` (name -> port) on loopback."""
    config = yaml.safe_load(PROM_CONFIG.read_text())
    config["rule_files"] = [str(PROM_CONFIG.parent / f) for f in config.get("rule_files", [])]
    jobs = []
    for job in config["scrape_configs"]:
        service = job["job_name"].removeprefix("adsmon-")
        if service in metrics_ports:
            for static in job["static_configs"]:
                static["targets"] = [f"127.0.0.1:{metrics_ports[service]}"]
            jobs.append(job)
    config["scrape_configs"] = jobs
    return config


def prometheus_config(ports: dict[str, tuple[int, int]], prom_port: int) -> Path:
    """The project's scrape config with this run's metrics ports, written under .local/prometheus/."""
    config = scrape_config({name: metrics for name, (_, metrics) in ports.items()})
    path = LOCAL / "prometheus" / f"suite-{prom_port}.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# Written by deploy/run_suite.py from deploy/prometheus/prometheus.yml; do not edit.\n"
                    + yaml.safe_dump(config, sort_keys=False))
    return path


def build_children(ports: dict[str, tuple[int, int]], prom_port: int) -> list[Child]:
    logs = LOCAL / "log"
    children = []
    transport = transport_env()
    for name, (grpc_port, metrics_port) in ports.items():
        env = service_env(name, grpc_port, metrics_port, ports["connects"][0], transport)
        tls = probe_identity(name, env)
        children.append(Child(
            name, [sys.executable, "-m", f"services.{name}"], env,
            logs / f"{name}.log", functools.partial(grpc_serving, grpc_port, tls),
            f"grpc 127.0.0.1:{grpc_port} ({'mutual TLS' if tls else 'plaintext'})  "
            f"metrics http://127.0.0.1:{metrics_port}/metrics"))
    binary = shutil.which("prometheus")
    if binary is None:
        raise SystemExit("prometheus not found: deploy/local/prometheus.sh install (make run's infra step does it)")
    config = prometheus_config(ports, prom_port)
    data = LOCAL / "prometheus" / f"suite-{prom_port}-data"
    children.append(Child(
        "prometheus",
        [binary, f"--config.file={config}", f"--storage.tsdb.path={data}",
         f"--web.listen-address=127.0.0.1:{prom_port}", "--web.enable-lifecycle",
         "--storage.tsdb.retention.time=2d"],
        dict(os.environ), logs / f"prometheus-{prom_port}.log",
        lambda: http_ok(f"http://127.0.0.1:{prom_port}/-/ready"),
        f"http://127.0.0.1:{prom_port}  (alerts /alerts, targets /targets)", cwd=config.parent))
    return children


class Supervisor:
    def __init__(self, children: list[Child]) -> None:
        self.children = children
        self.stopping = False

    def request_stop(self, *_: object) -> None:
        self.stopping = True

    def start_all(self) -> bool:
        """Start every child and wait until all are ready; False (after saying why) if one is not."""
        for child in self.children:
            child.start()
        deadline = time.monotonic() + START_TIMEOUT
        pending = list(self.children)
        while pending and not self.stopping:
            for child in list(pending):
                code = child.exited()
                if code is not None:
                    log(f"{child.name} {exit_text(code)} during start-up; last lines of {child.log_path}:\n"
                        f"{child.log_tail()}")
                    return False
                if child.ready():
                    child.serving = True
                    log(f"{child.name:10s} SERVING  {child.line()}")
                    pending.remove(child)
            if pending and time.monotonic() > deadline:
                log(f"not ready after {START_TIMEOUT:.0f}s: {', '.join(c.name for c in pending)}")
                return False
            time.sleep(0.3)
        return not pending

    def tick(self) -> None:
        """One supervision step: notice deaths, schedule and perform restarts, report recoveries."""
        now = time.monotonic()
        for child in self.children:
            code = child.exited()
            if code is not None and child.restart_at is None:
                uptime = now - child.started_at
                child.failures = 0 if uptime >= STABLE_AFTER else child.failures + 1
                delay = backoff.exponential(BACKOFF_INITIAL, BACKOFF_MAX, max(0, child.failures - 1))
                child.restart_at = now + delay
                child.serving = False
                log(f"{child.name} {exit_text(code)} after {uptime:.0f}s up; restarting in {delay:.0f}s "
                    f"(restart {child.restarts + 1}); last lines of {child.log_path}:\n{child.log_tail(5)}")
            elif child.restart_at is not None and now >= child.restart_at:
                child.restarts += 1
                child.start()
                log(f"{child.name} restarted (pid {child.proc.pid if child.proc else '-'}, "
                    f"restart {child.restarts})")
            elif code is None and not child.serving and child.ready():
                child.serving = True
                log(f"{child.name:10s} SERVING again  {child.line()}")
            elif code is None and not child.serving and not child.warned_slow and now - child.started_at > 60:
                child.warned_slow = True
                log(f"{child.name} not ready 60s after its restart; see {child.log_path}")

    def stop_all(self) -> int:
        code = 0
        for child in self.children:
            if child.exited() is None and child.proc is not None:
                child.proc.send_signal(signal.SIGTERM)
        for child in self.children:
            if child.proc is None:
                continue
            try:
                child.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                child.proc.kill()
                child.proc.wait()
                code = 1
            log(f"{child.name} stopped ({child.proc.returncode})")
        return code


def main() -> int:
    (LOCAL / "log").mkdir(parents=True, exist_ok=True)
    ports = service_ports()
    prom_port = env_port("ADSMON_PROM_PORT", 9090)
    wanted = {f"ADSMON_{n.upper()}_{kind}_PORT": p for n, (g, m) in ports.items()
              for kind, p in (("GRPC", g), ("METRICS", m))}
    wanted["ADSMON_PROM_PORT"] = prom_port
    busy = [f"{var}={port}" for var, port in wanted.items() if port_in_use(port)]
    if busy:
        log(f"ports already in use (another `make run`?): {', '.join(busy)}; set those variables to free ports")
        return 1
    supervisor = Supervisor(build_children(ports, prom_port))
    signal.signal(signal.SIGINT, supervisor.request_stop)
    signal.signal(signal.SIGTERM, supervisor.request_stop)
    up = supervisor.start_all()
    if up and not supervisor.stopping:
        tls = next((c.env.get("ADSMON_TLS_DIR") for c in supervisor.children if c.env.get("ADSMON_TLS_DIR")), None)
        if tls:
            log(f"services talk mutual TLS; client certificates for grpcurl and tools in {tls} (README "
                "\"Talking to a running suite\")")
        log("all up. Watch: `make demo` (traffic), `make snapshot` (dashboards as a PNG), "
            f"Prometheus http://127.0.0.1:{prom_port}. A crashed child is restarted. Ctrl-C stops everything "
            "(then Kafka and PostgreSQL unless KEEP_INFRA=1).")
        while not supervisor.stopping:
            supervisor.tick()
            time.sleep(0.5)
    code = supervisor.stop_all()
    return code if up else 1


if __name__ == "__main__":
    raise SystemExit(main())
