"""The containerised test stack that `make test-containers` started, as the tests see it.

deploy/containers/stack.py writes a description (ports, database URLs, container
names, the auth secret file) and names it in ADSMON_TEST_STACK. When it is set,
the e2e `suite` fixture and `auth_secret` reach those containers over the
network instead of starting processes.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STACK_ENV = "ADSMON_TEST_STACK"


@dataclass(frozen=True)
class ContainerService:
    """One service of the stack; duck-types the parts of tests.e2e.conftest.ServiceProcess tests read."""

    name: str
    container: str
    grpc_port: int
    metrics_port: int
    env: dict[str, str]
    engine: str

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def inspect(self, template: str) -> str:
        return subprocess.run([self.engine, "inspect", "-f", template, self.container], capture_output=True,
                              text=True, check=True, timeout=30).stdout.strip()

    @property
    def pid(self) -> int:
        """The host pid of the container's main process (0 while it is not running)."""
        return int(self.inspect("{{.State.Pid}}"))

    @property
    def restart_count(self) -> int:
        return int(self.inspect("{{.RestartCount}}"))


def description() -> dict[str, Any] | None:
    path = os.environ.get(STACK_ENV)
    return json.loads(Path(path).read_text()) if path else None


def auth_secret() -> bytes:
    stack = description()
    assert stack is not None, f"{STACK_ENV} is not set"
    return Path(stack["secret_file"]).read_bytes().strip()


def services() -> dict[str, ContainerService]:
    stack = description()
    assert stack is not None, f"{STACK_ENV} is not set: run these through `make test-containers`"
    return {name: ContainerService(name, svc["container"], svc["grpc_port"], svc["metrics_port"], svc["env"],
                                   stack["engine"])
            for name, svc in stack["services"].items() if "grpc_port" in svc}
