"""Run a compose file's services as containers: `docker compose` where docker is, podman directly here.

    python deploy/containers/stack.py up   [-f deploy/compose.test.yaml]
    python deploy/containers/stack.py down [-f ...]
    python deploy/containers/stack.py test [-f ...] -- <command>   # up, run, down (also on failure)

Why podman is driven directly rather than through podman-compose: podman runs
health checks from systemd timers, and this kind of machine has no systemd, so a
`depends_on: {condition: service_healthy}` (and any wait on health) never
completes under podman-compose. This driver reads the same compose file, starts
the services in dependency order with `podman run` (runtime, limits and host
network from deploy/containers/containers.conf), and runs each service's
compose `healthcheck.test` itself with `podman exec`. It covers the compose
keys deploy/compose.test.yaml uses and refuses any other. With docker (daemon
answering, or ADSMON_CONTAINER_ENGINE=docker) it is `docker compose ... up
--wait` and `down`, unchanged.

`test` writes a fresh auth secret, starts the stack, writes a description of it
(ports, database URLs, container names: tests/support/container_stack.py reads
it through ADSMON_TEST_STACK) and runs the command with that in its
environment; the stack is removed whatever the command's outcome
(ADSMON_KEEP_STACK=1 keeps it for a look), and container logs are kept under
.local/log/containers/.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_FILE = ROOT / "deploy" / "compose.test.yaml"
CONTAINERS_CONF = ROOT / "deploy" / "containers" / "containers.conf"
# Keys of a compose service this driver knows how to pass to `podman run`.
SUPPORTED_KEYS = {"image", "command", "entrypoint", "environment", "volumes", "network_mode", "read_only",
                  "tmpfs", "cap_drop", "security_opt", "restart", "stop_grace_period", "stop_signal",
                  "ulimits", "secrets", "healthcheck", "depends_on", "user"}
VAR_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*))?\}|\$\$")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] stack: {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------ compose file ---

def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """Compose variable substitution: ${VAR}, ${VAR:-default}, ${VAR-default}, $$ -> $."""
    if isinstance(value, str):
        def sub(m: re.Match[str]) -> str:
            if m.group(0) == "$$":
                return "$"
            name, op, default = m.group(1), m.group(2), m.group(3) or ""
            if op == ":-":
                return env.get(name) or default
            if op == "-":
                return env.get(name, default)
            return env.get(name, "")
        return VAR_RE.sub(sub, value)
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    return value


def load(path: Path, env: Mapping[str, str]) -> dict[str, Any]:
    doc = yaml.safe_load(path.read_text())
    doc = interpolate({k: v for k, v in doc.items() if not str(k).startswith("x-")}, env)
    assert isinstance(doc, dict)
    return doc


def start_order(services: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Services ordered so each comes after everything it depends on (a cycle is an error)."""
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in order:
            return
        if name in visiting:
            raise SystemExit(f"depends_on cycle through {name}")
        visiting.add(name)
        for dep in depends_on(services[name]):
            visit(dep)
        visiting.discard(name)
        order.append(name)

    for name in services:
        visit(name)
    return order


def depends_on(svc: Mapping[str, Any]) -> dict[str, str]:
    deps = svc.get("depends_on", {})
    if isinstance(deps, list):
        return {d: "service_started" for d in deps}
    return {name: spec.get("condition", "service_started") for name, spec in deps.items()}


def duration_seconds(text: str) -> float:
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text))


def health_command(svc: Mapping[str, Any]) -> list[str] | None:
    test = svc.get("healthcheck", {}).get("test")
    if not test or test == ["NONE"]:
        return None
    if isinstance(test, str):
        return ["sh", "-c", test]
    kind, *args = test
    return ["sh", "-c", args[0]] if kind == "CMD-SHELL" else args


def container_name(project: str, service: str) -> str:
    return f"{project}-{service}"


def run_args(project: str, name: str, svc: Mapping[str, Any], base: Path,
             secret_files: Mapping[str, Path]) -> list[str]:
    """The `podman run` arguments for one compose service."""
    unknown = set(svc) - SUPPORTED_KEYS
    if unknown:
        raise SystemExit(f"{name}: compose keys {sorted(unknown)} are not handled by this driver")
    args = ["run", "-d", "--name", container_name(project, name), "--label", f"io.adsmon.stack={project}",
            "--label", f"io.adsmon.service={name}"]
    network = svc.get("network_mode", "host")
    if network != "host":
        raise SystemExit(f"{name}: network_mode {network!r}: only host networking runs on this machine")
    args += ["--network", "host", "--restart", str(svc.get("restart", "no"))]
    for key, value in (svc.get("environment") or {}).items():
        args += ["-e", f"{key}={value}"]
    for volume in svc.get("volumes", []):
        source, _, rest = str(volume).partition(":")
        if source.startswith("."):
            source = str((base / source).resolve())
        args += ["-v", f"{source}:{rest}"]
    for secret in svc.get("secrets", []):
        args += ["-v", f"{secret_files[secret]}:/run/secrets/{secret}:ro"]
    for path in svc.get("tmpfs", []):
        args += ["--tmpfs", path]
    if svc.get("read_only"):
        args.append("--read-only")
    if "user" in svc:
        args += ["--user", str(svc["user"])]
    for cap in svc.get("cap_drop", []):
        args += ["--cap-drop", cap]
    for opt in svc.get("security_opt", []):
        args += ["--security-opt", opt]
    for limit, value in (svc.get("ulimits") or {}).items():
        soft, hard = (value, value) if isinstance(value, int) else (value["soft"], value["hard"])
        args += ["--ulimit", f"{limit}={soft}:{hard}"]
    if "stop_signal" in svc:
        args += ["--stop-signal", svc["stop_signal"]]
    if "stop_grace_period" in svc:
        args += ["--stop-timeout", str(int(duration_seconds(svc["stop_grace_period"])))]
    entrypoint = svc.get("entrypoint")
    if entrypoint is not None:
        args += ["--entrypoint", json.dumps(entrypoint if isinstance(entrypoint, list) else [entrypoint])]
    args.append(svc["image"])
    command = svc.get("command", [])
    args += command if isinstance(command, list) else ["sh", "-c", command]
    return args


# ------------------------------------------------------------------ engine ---

def detect_engine() -> str:
    engine = os.environ.get("ADSMON_CONTAINER_ENGINE", "")
    if engine:
        return engine
    if shutil.which("docker") and subprocess.run(["docker", "info"], capture_output=True,
                                                 check=False).returncode == 0:
        return "docker"
    return "podman"


class Stack:
    def __init__(self, file: Path, engine: str, env: dict[str, str]) -> None:
        self.file = file
        self.engine = engine
        self.env = env
        self.doc = load(file, env)
        self.project = str(self.doc.get("name") or file.stem)
        self.services: dict[str, dict[str, Any]] = self.doc["services"]
        if engine == "podman":
            self.env.setdefault("CONTAINERS_CONF", str(CONTAINERS_CONF))

    def cli(self, *args: str, check: bool = True, capture: bool = True,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([self.engine, *args], env=self.env, text=True, capture_output=capture,
                                timeout=timeout, check=False)
        if check and result.returncode != 0:
            raise SystemExit(f"{self.engine} {' '.join(args[:3])}...: exit {result.returncode}\n"
                             f"{result.stdout}{result.stderr}")
        return result

    def compose(self, *args: str, timeout: float = 600) -> None:
        self.cli("compose", "-f", str(self.file), "-p", self.project, *args, capture=False, timeout=timeout)

    def secret_files(self) -> dict[str, Path]:
        return {name: Path(spec["file"]) if Path(spec["file"]).is_absolute()
                else (self.file.parent / spec["file"]).resolve()
                for name, spec in (self.doc.get("secrets") or {}).items()}

    # --- podman: a service at a time, health checks run by us ---

    def healthy(self, name: str) -> bool:
        command = health_command(self.services[name])
        if command is None:
            return self.running(name)
        timeout = duration_seconds(self.services[name].get("healthcheck", {}).get("timeout", "10s")) or 10
        try:
            result = self.cli("exec", container_name(self.project, name), *command, check=False,
                              timeout=timeout + 5)
        except subprocess.TimeoutExpired:
            return False
        return result.returncode == 0

    def state(self, name: str) -> tuple[str, int]:
        result = self.cli("inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}",
                          container_name(self.project, name), check=False)
        status, _, code = result.stdout.strip().partition(" ")
        return status, int(code or 0)

    def running(self, name: str) -> bool:
        return self.state(name)[0] == "running"

    def wait_for(self, name: str, condition: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, code = self.state(name)
            if condition == "service_completed_successfully":
                if status == "exited":
                    if code != 0:
                        raise SystemExit(f"{name} exited {code}\n{self.logs(name)}")
                    return
            elif status == "running" and (condition == "service_started" or self.healthy(name)):
                return
            time.sleep(0.5)
        raise SystemExit(f"{name}: not {condition} after {timeout:.0f}s\n{self.logs(name)}")

    def logs(self, name: str, lines: int = 40) -> str:
        result = self.cli("logs", "--tail", str(lines), container_name(self.project, name), check=False)
        return result.stdout + result.stderr

    def up(self, timeout: float = 300) -> None:
        started = time.monotonic()
        self.down(quiet=True)
        if self.engine == "docker":
            self.compose("up", "-d", "--wait", "--wait-timeout", str(int(timeout)))
        else:
            files = self.secret_files()
            for name in start_order(self.services):
                for dep, condition in depends_on(self.services[name]).items():
                    self.wait_for(dep, condition, timeout)
                self.cli("run", *run_args(self.project, name, self.services[name], self.file.parent, files)[1:])
                log(f"started {name}")
            for name in self.services:
                self.wait_for(name, "service_healthy", timeout)
        log(f"{self.project}: {len(self.services)} services healthy in {time.monotonic() - started:.0f}s")

    def containers(self) -> list[str]:
        result = self.cli("ps", "-a", "-q", "--filter", f"label=io.adsmon.stack={self.project}", check=False)
        return result.stdout.split()

    def save_logs(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        for name in self.services:
            result = self.cli("logs", container_name(self.project, name), check=False)
            (directory / f"{name}.log").write_text(result.stdout + result.stderr)

    def down(self, quiet: bool = False) -> None:
        if self.engine == "docker":
            self.compose("down", "-v", "--remove-orphans", "-t", "3")
            return
        ids = self.containers()
        if ids:
            # Throwaway containers: a short stop timeout, then SIGKILL.
            self.cli("rm", "-f", "-t", "3", *ids, check=False, timeout=120)
            if not quiet:
                log(f"removed {len(ids)} containers of {self.project}")

    def describe(self, secret_file: Path) -> dict[str, Any]:
        """What the tests need to reach the stack: addresses, database URLs, container names."""
        services: dict[str, Any] = {}
        for name, svc in self.services.items():
            env = {k: str(v) for k, v in (svc.get("environment") or {}).items()}
            # docker compose names a service's (first) container <project>-<service>-1.
            container = container_name(self.project, name) + ("-1" if self.engine == "docker" else "")
            services[name] = {"container": container, "env": env}
            if "ADSMON_GRPC_PORT" in env:
                services[name].update(grpc_port=int(env["ADSMON_GRPC_PORT"]),
                                      metrics_port=int(env["ADSMON_METRICS_PORT"]))
        connects_env = services["connects"]["env"]
        return {"engine": self.engine, "project": self.project, "secret_file": str(secret_file),
                "kafka_bootstrap": connects_env["ADSMON_KAFKA_BOOTSTRAP"],
                "kafka_topic_prefix": connects_env.get("ADSMON_KAFKA_TOPIC_PREFIX", ""),
                "kafka_group_prefix": connects_env.get("ADSMON_KAFKA_GROUP_PREFIX", ""),
                "services": services}


def fresh_secret(directory: Path) -> Path:
    """A random auth secret for this run, readable by the images' non-root user (uid 10001)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "auth_secret"
    path.unlink(missing_ok=True)
    path.write_text(secrets.token_hex(32))
    if os.geteuid() == 0:
        os.chown(path, 10001, 10001)
        path.chmod(0o440)
    else:
        path.chmod(0o444)
    return path


def run_test(stack_file: Path, engine: str, command: Sequence[str]) -> int:
    local = Path(os.environ.get("ADSMON_LOCAL", ROOT / ".local"))
    run_dir = local / "containers" / "run"
    run = secrets.token_hex(4)
    env = dict(os.environ)
    env["ADSMON_TEST_SECRET_FILE"] = str(fresh_secret(run_dir))
    env.setdefault("ADSMON_KAFKA_TOPIC_PREFIX", f"ct-{run}.")
    env.setdefault("ADSMON_KAFKA_GROUP_PREFIX", f"ct-{run}-")
    stack = Stack(stack_file, engine, env)
    started = time.monotonic()
    status = 1
    try:
        stack.up()
        description = run_dir / "stack.json"
        description.write_text(json.dumps(stack.describe(Path(env["ADSMON_TEST_SECRET_FILE"])), indent=2))
        test_env = {k: v for k, v in env.items() if not k.startswith("ADSMON_")}
        test_env.update({"ADSMON_TEST_STACK": str(description), "ADSMON_LOCAL": str(local),
                         "ADSMON_CONTAINER_ENGINE": engine,
                         "ADSMON_KAFKA_BOOTSTRAP": stack.describe(Path())["kafka_bootstrap"],
                         "ADSMON_KAFKA_TOPIC_PREFIX": env["ADSMON_KAFKA_TOPIC_PREFIX"],
                         "ADSMON_KAFKA_GROUP_PREFIX": env["ADSMON_KAFKA_GROUP_PREFIX"]})
        if engine == "podman":
            test_env["CONTAINERS_CONF"] = env["CONTAINERS_CONF"]
        log(f"running {' '.join(command)}")
        status = subprocess.run(list(command), env=test_env, cwd=ROOT, check=False).returncode
    finally:
        logs = local / "log" / "containers"
        try:
            stack.save_logs(logs)
        finally:
            if os.environ.get("ADSMON_KEEP_STACK"):
                log(f"ADSMON_KEEP_STACK set: {stack.project} left running")
            else:
                stack.down()
        log(f"container logs in {logs}; total {time.monotonic() - started:.0f}s")
    return status


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["up", "down", "test"])
    parser.add_argument("-f", "--file", type=Path, default=DEFAULT_FILE)
    argv = list(argv)
    command = argv[argv.index("--") + 1:] if "--" in argv else []
    args = parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    engine = detect_engine()
    if args.action == "test":
        if not command:
            parser.error("test needs a command after --")
        return run_test(args.file.resolve(), engine, command)
    env = dict(os.environ)
    if args.action == "up" and "ADSMON_TEST_SECRET_FILE" not in env:
        local = Path(env.get("ADSMON_LOCAL", ROOT / ".local"))
        env["ADSMON_TEST_SECRET_FILE"] = str(fresh_secret(local / "containers" / "run"))
    stack = Stack(args.file.resolve(), engine, env)
    if args.action == "up":
        stack.up()
    else:
        stack.down()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
