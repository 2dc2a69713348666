"""The connects service built through its bootstrap for tests (fakes or a real database; no server, no Kafka)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from services.connects.bootstrap import ConnectsApp, bootstrap
from services.connects.config import ConnectsConfig
from services.connects.service_layer import handlers

TEST_SECRET = "t" * 32


def connects_config(**settings: str) -> ConnectsConfig:
    """A config from `settings` (ADSMON_CONNECTS_<NAME>=value) only; relay and jobs consumer off by default."""
    environ = {"ADSMON_TRANSPORT": "plaintext",
               "ADSMON_AUTH_SECRET": TEST_SECRET, "ADSMON_CONNECTS_RELAY_IN_PROCESS": "false",
               "ADSMON_CONNECTS_CONSUME_JOBS": "false"}
    environ.update({f"ADSMON_CONNECTS_{k}": v for k, v in settings.items()})
    return ConnectsConfig.from_env(environ)


def connects_app(uow_factory: Callable[[], Any], queries: Any, *, clock: Callable[[], datetime] | None = None,
                 metrics: handlers.Metrics | None = None, relay: Any = None, **settings: str) -> ConnectsApp:
    """`bootstrap` with the given storage; start its workers with `services.kit.server.running(app)`."""
    return bootstrap(connects_config(**settings), uow_factory=uow_factory, queries=queries,
                     clock=clock or (lambda: datetime.now(UTC)), metrics=metrics or handlers.NullMetrics(),
                     relay=relay)
