"""gRPC server bootstrap shared by every service.

`serve(app)` starts a grpc.aio server with our interceptors, the standard
health service and server reflection, a Prometheus /metrics endpoint, and the
service's background components (outbox relay, consumers, schedulers). On
SIGTERM/SIGINT it turns health to NOT_SERVING first, waits a moment so load
balancers stop routing, drains in-flight RPCs within the grace period, then
stops the components in reverse order.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server

from services.kit import logging as kit_logging
from services.kit.auth import Authenticator, CallerAuthenticator, Policy
from services.kit.config import ServiceConfig
from services.kit.interceptors import ServerInterceptor
from services.kit.startup import StartupError
from services.kit.tls import PeerCertificateAuthenticator, server_credentials

log = logging.getLogger("adsmon.server")


class Component(Protocol):
    """A background part of a service (relay, consumer, scheduler): started after the
    server listens, stopped after it drained. Methods may be sync or async."""

    def start(self) -> Any: ...

    def stop(self) -> Any: ...


@dataclass
class ServiceRegistration:
    """One gRPC service: its full name, the generated add_*_to_server, the servicer, the policy."""

    name: str
    add_to_server: Callable[[Any, grpc.aio.Server], None]
    servicer: Any
    policy: Policy


@dataclass
class App:
    """What a service's bootstrap hands to `serve`."""

    config: ServiceConfig
    services: list[ServiceRegistration]
    components: list[Component] = field(default_factory=list)
    on_close: list[Callable[[], Any]] = field(default_factory=list)
    drain_delay_seconds: float = 0.5
    # Filled in by serve(): the port actually bound (useful with port 0 in tests).
    grpc_port: int | None = None
    metrics_port: int | None = None


async def _maybe_await(value: Any) -> None:
    if inspect.isawaitable(value):
        await value


async def _call(fn: Callable[[], Any]) -> None:
    """Await an async callable; run a blocking one (e.g. a thread join) off the event loop."""
    if inspect.iscoroutinefunction(fn):
        await fn()
    else:
        await _maybe_await(await asyncio.to_thread(fn))


async def start_components(app: App) -> list[Component]:
    """Start `app`'s components in order; on a failure stop those already started and raise."""
    started: list[Component] = []
    try:
        for component in app.components:
            await _maybe_await(component.start())
            started.append(component)
    except BaseException:
        await stop_components(started)
        raise
    return started


async def stop_components(started: list[Component]) -> None:
    """Stop components in reverse order of starting; a failure to stop one is logged, the rest still stop."""
    for component in reversed(started):
        try:
            await _call(component.stop)
        except Exception:
            log.exception("error stopping %s", type(component).__name__)


@contextlib.asynccontextmanager
async def running(app: App) -> AsyncIterator[App]:
    """The app's components running without a gRPC server (unit tests of a bootstrapped service)."""
    started = await start_components(app)
    try:
        yield app
    finally:
        await stop_components(started)
        for close in reversed(app.on_close):
            await _call(close)


def _check_bindable(host: str, port: int, what: str, *, reuse_port: bool = False) -> None:
    """Bind once ourselves so a busy port is one clear error (gRPC core would log its own lines)."""
    if port == 0:
        return
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            probe.bind((host, port))
    except OSError as exc:
        raise StartupError(f"cannot listen for {what} on {host}:{port}: {exc.strerror or exc}") from None


def authenticator(cfg: ServiceConfig) -> CallerAuthenticator:
    """Who the caller is: the client certificate's identity under mutual TLS, else the bearer token's."""
    if cfg.tls is not None:
        return PeerCertificateAuthenticator(cfg.tls_trust_domain)
    return Authenticator(cfg.auth_secret)


class Server:
    """A started service; `stop()` performs the graceful shutdown sequence."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.health = health.aio.HealthServicer()
        self._grpc: grpc.aio.Server | None = None
        self._metrics: Any = None
        self._started: list[Component] = []
        self._stopped = asyncio.Event()

    async def start(self) -> None:
        cfg = self.app.config
        policies = {s.name: s.policy for s in self.app.services}
        interceptor = ServerInterceptor(cfg.service, authenticator(cfg), policies,
                                        max_string_length=cfg.max_string_length,
                                        max_concurrent_rpcs=cfg.max_concurrent_rpcs)
        reuse_port = cfg.grpc_reuse_port
        server = grpc.aio.server(
            interceptors=[interceptor],
            options=[("grpc.max_receive_message_length", cfg.max_message_bytes),
                     ("grpc.max_send_message_length", cfg.max_message_bytes),
                     ("grpc.so_reuseport", int(reuse_port))],
        )
        for svc in self.app.services:
            svc.add_to_server(svc.servicer, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        names = [s.name for s in self.app.services]
        reflection.enable_server_reflection(
            [*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
             reflection.SERVICE_NAME], server)
        address = f"{cfg.grpc_host}:{cfg.grpc_port}"
        _check_bindable(cfg.grpc_host, cfg.grpc_port, "gRPC", reuse_port=reuse_port)
        try:
            if cfg.tls is not None:
                port = server.add_secure_port(address, server_credentials(cfg.tls))
            else:
                port = server.add_insecure_port(address)
        except RuntimeError:
            port = 0
        if not port:
            raise StartupError(f"cannot listen for gRPC on {address} (port in use or address invalid)")
        self.app.grpc_port = port
        self._metrics = self._start_metrics(cfg)
        await server.start()
        self._grpc = server
        self._started = await start_components(self.app)
        for name in ("", *names):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("serving %s on %s:%d (%s), metrics on :%s", ",".join(names), cfg.grpc_host, port,
                 "mutual TLS" if cfg.tls is not None else "plaintext", self.app.metrics_port)

    def _start_metrics(self, cfg: ServiceConfig) -> Any:
        try:
            result = start_http_server(cfg.metrics_port, addr=cfg.metrics_host)
        except OSError as exc:
            raise StartupError(
                f"cannot serve metrics on {cfg.metrics_host}:{cfg.metrics_port}: {exc.strerror}"
            ) from None
        http_server = result[0] if isinstance(result, tuple) else None
        self.app.metrics_port = http_server.server_port if http_server else cfg.metrics_port
        return http_server

    async def stop(self) -> None:
        """NOT_SERVING, drain delay, stop accepting and drain RPCs, stop components, close."""
        if self._stopped.is_set():
            return
        await self.health.enter_graceful_shutdown()
        if self._grpc is not None:
            await asyncio.sleep(self.app.drain_delay_seconds)
            await self._grpc.stop(self.app.config.shutdown_grace_seconds)
        await stop_components(self._started)
        for close in reversed(self.app.on_close):
            await _call(close)
        if self._metrics is not None:
            self._metrics.shutdown()
        self._stopped.set()
        log.info("stopped")


def tune_process(base: ServiceConfig) -> None:
    """Process-wide interpreter settings from the config: the GIL switch interval (set at process start)."""
    sys.setswitchinterval(base.gil_switch_interval_ms / 1000.0)


async def serve_until_signalled(app: App, *, freeze_gc: bool = False) -> None:
    """Start `app`, then run until SIGTERM or SIGINT and shut down gracefully.

    `freeze_gc`: once started, move every object alive (modules, stubs, metadata, pools) to the garbage
    collector's permanent generation, so that the collections under load walk only per-request objects.
    """
    server = Server(app)
    await server.start()
    if freeze_gc:
        gc.collect()
        gc.freeze()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutdown requested")
    await server.stop()


def run_main(service: str, build_app: Callable[[Any], App | Awaitable[App]], config: Any) -> int:
    """Process entry point: set up logging, build the app, serve until signalled.

    `config` is the service's config (with `.base`, a ServiceConfig). Start-up
    problems (bad settings, unreachable database or broker, port in use) end the
    process with exit code 2 and one line on stderr, never a traceback.
    """
    base: ServiceConfig = config.base

    async def _main() -> None:
        # Ports first: a busy port should not cost a migration run to find out.
        _check_bindable(base.grpc_host, base.grpc_port, "gRPC", reuse_port=base.grpc_reuse_port)
        _check_bindable(base.metrics_host, base.metrics_port, "metrics")
        built = build_app(config)
        app = await built if inspect.isawaitable(built) else built
        await serve_until_signalled(app, freeze_gc=base.gc_freeze)

    kit_logging.configure(service, base.log_level, base.log_json)
    tune_process(base)
    try:
        asyncio.run(_main())
    except StartupError as exc:
        print(f"{service}: cannot start: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


def run_processes(service: str, module: str, processes: int, base: ServiceConfig) -> int:
    """Serve with `processes` copies of `python -m <module>` on one gRPC port (SO_REUSEPORT).

    Python runs one thread at a time per process; several processes use several cores. Each copy
    is a complete server (its own batcher, pools, relay): correctness across them rests on the
    database (row locks, unique keys), as with several replicas. Copy i serves metrics on
    metrics_port + i. The first copy starts alone (it runs the migrations), the rest once it
    listens. SIGTERM/SIGINT is passed on to every copy; if one copy exits, the others are stopped
    and its exit code returned, so the process manager restarts the whole group.
    """
    if base.grpc_port == 0:
        print(f"{service}: cannot start: several processes need a fixed gRPC port", file=sys.stderr)
        return 2
    prefix = f"ADSMON_{service.upper()}_"
    stopping = False
    children: list[subprocess.Popen[bytes]] = []

    def on_signal(*_: Any) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)

    def spawn(i: int) -> subprocess.Popen[bytes]:
        env = {**os.environ, f"{prefix}PROCESSES": "1", f"{prefix}GRPC_REUSE_PORT": "true",
               f"{prefix}METRICS_PORT": str(base.metrics_port + i if base.metrics_port else 0)}
        return subprocess.Popen([sys.executable, "-m", module, "serve"], env=env)

    def listening() -> bool:
        host = "127.0.0.1" if base.grpc_host in ("0.0.0.0", "") else base.grpc_host  # noqa: S104
        try:
            socket.create_connection((host, base.grpc_port), timeout=0.5).close()
            return True
        except OSError:
            return False

    children.append(spawn(0))
    while not stopping and children[0].poll() is None and not listening():
        time.sleep(0.1)
    while not stopping and len(children) < processes and children[0].poll() is None:
        children.append(spawn(len(children)))
    code = 0
    while True:
        exited = [c for c in children if c.poll() is not None]
        if exited and not stopping:
            code = exited[0].returncode
            log.warning("%s process %d exited with %s; stopping the others", service, children.index(exited[0]),
                        code)
            on_signal()
        if len(exited) == len(children):
            return code
        time.sleep(0.1)
