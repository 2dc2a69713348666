"""The one command line every service has: `python -m services.<svc> [serve [--processes N] | migrate | relay]`.

Each service's `__main__.py` is the same three lines (`main(SPEC, sys.argv[1:])`
under `if __name__ == "__main__"`); its bootstrap module declares the SPEC.

- `serve` (the default): migrate, then serve gRPC + metrics + background workers
  until SIGTERM/SIGINT (`--processes N`, or ADSMON_<SVC>_PROCESSES, runs N
  serving processes on one port).
- `migrate`: bring the database schema to the latest version and exit.
- `relay`: only the outbox relay (for ADSMON_<SVC>_RELAY_IN_PROCESS=false
  deployments; safe beside other relays: rows are claimed with SKIP LOCKED).

A bad setting or an unreachable dependency ends any of them with exit code 2
and one line on stderr, never a traceback.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import start_http_server

from services.kit import logging as kit_logging
from services.kit.bootstrap import migrate_database, outbox_relay
from services.kit.config import ServiceConfig
from services.kit.db import check_connection, make_engine
from services.kit.migrations import Migrations
from services.kit.server import App, run_main, run_processes
from services.kit.startup import StartupError

USAGE = "usage: python -m services.{name} [serve [--processes N] | migrate | relay]"


@dataclass(frozen=True)
class ServiceSpec:
    """What the kit's command line needs to know about a service."""

    name: str  # "connects": the ADSMON_<NAME>_ settings prefix, logs, metrics' service label
    load_config: Callable[[], Any]  # -> the service's config (with .base)
    bootstrap: Callable[[Any], App | Awaitable[App]]  # the service's bootstrap(config)
    migrations: Migrations

    @property
    def module(self) -> str:
        return f"services.{self.name}"


def _fail(name: str, exc: Exception) -> int:
    print(f"{name}: cannot start: {exc}", file=sys.stderr)
    return 2


def main(spec: ServiceSpec, argv: Sequence[str]) -> int:
    """Run the command in `argv` (without the program name); returns the process exit code."""
    args = list(argv) or ["serve"]
    command, rest = args[0], args[1:]
    processes: int | None = None
    if command == "serve" and rest[:1] == ["--processes"] and len(rest) == 2 and rest[1].isdigit():
        processes = int(rest[1])
    elif command not in ("serve", "migrate", "relay") or rest:
        print(USAGE.format(name=spec.name), file=sys.stderr)
        return 2
    try:
        config = spec.load_config()
    except StartupError as exc:
        return _fail(spec.name, exc)
    base: ServiceConfig = config.base
    if command == "migrate":
        return run_migrate(spec, base)
    if command == "relay":
        return run_relay(base)
    processes = processes or base.processes
    if processes > 1:
        return run_processes(spec.name, spec.module, processes, base)
    return run_main(spec.name, spec.bootstrap, config)


def run_migrate(spec: ServiceSpec, base: ServiceConfig) -> int:
    """`migrate`: apply the service's pending migrations and exit (also safe beside starting servers)."""
    kit_logging.configure(spec.name, base.log_level, base.log_json)
    try:
        engine = make_engine(base.database_url, pool_size=1)
        try:
            check_connection(engine)
            migrate_database(engine, spec.migrations)
        finally:
            engine.dispose()
    except StartupError as exc:
        return _fail(spec.name, exc)
    return 0


def run_relay(base: ServiceConfig) -> int:
    """`relay`: only the outbox relay and its metrics, until SIGTERM/SIGINT."""
    kit_logging.configure(base.service, base.log_level, base.log_json)
    try:
        engine = make_engine(base.database_url, pool_size=2)
        check_connection(engine)
        try:
            start_http_server(base.metrics_port, addr=base.metrics_host)
        except OSError as exc:
            raise StartupError(f"cannot serve metrics on {base.metrics_host}:{base.metrics_port}: "
                               f"{exc.strerror}") from None
    except StartupError as exc:
        return _fail(base.service, exc)
    relay = outbox_relay(base, engine)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    relay.start()
    stop.wait()
    relay.stop()
    engine.dispose()
    return 0
