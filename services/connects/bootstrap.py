"""The one place where the connects service is wired. Nothing connects at import time.

What runs (each a kit.worker.Worker, started after the server listens and stopped after it drained):
the outbox relay (unless ADSMON_CONNECTS_RELAY_IN_PROCESS=false), the group-commit batcher that
runs `handlers.execute` over one unit of work per batch, the expiry sweeper, and the
marketplace.jobs.v1 consumer (unless ADSMON_CONNECTS_CONSUME_JOBS=false).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from adsmon.connects.v1 import connects_pb2_grpc
from sqlalchemy.engine import Engine

from services.connects.adapters import topics
from services.connects.adapters.metrics import PrometheusMetrics
from services.connects.adapters.migrations import MIGRATIONS
from services.connects.adapters.repository import SqlAlchemyLedgerQueries, SqlAlchemyLedgerUnitOfWork
from services.connects.config import SERVICE, ConnectsConfig
from services.connects.entrypoints import jobs_consumer
from services.connects.entrypoints.grpc_servicer import POLICY, SERVICE_NAME, ConnectsServicer
from services.connects.entrypoints.scheduler import ExpirySweeper
from services.connects.service_layer.handlers import Metrics
from services.connects.service_layer.ledger import Ledger, RunBlocking, ledger_batcher
from services.connects.service_layer.unit_of_work import AbstractLedgerQueries, AbstractLedgerUnitOfWork
from services.kit.bootstrap import consumer, outbox_relay, start_foundation
from services.kit.config import ServiceConfig
from services.kit.consumer import Handler, IdempotentConsumer
from services.kit.db import Database
from services.kit.main import ServiceSpec
from services.kit.server import App, Component, ServiceRegistration
from services.kit.worker import Worker


def utc_now() -> datetime:
    return datetime.now(UTC)


async def _to_thread(fn: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.to_thread(fn, *args)


@dataclass
class ConnectsApp(App):
    """The served app, plus the ledger facade (tests drive it directly)."""

    ledger: Ledger = field(kw_only=True)


def bootstrap(
    config: ConnectsConfig, *,
    database: Database | None = None,
    uow_factory: Callable[[], AbstractLedgerUnitOfWork] | None = None,
    queries: AbstractLedgerQueries | None = None,
    clock: Callable[[], datetime] = utc_now,
    metrics: Metrics | None = None,
    relay: Worker | None = None,
    run_blocking: RunBlocking | None = None,
) -> ConnectsApp:
    """Wire the ledger. Every collaborator defaults to the real one built from `config`.

    The database is opened (and migrated, and the topics created) only if something needs it: a
    default unit of work or queries, the in-process relay, or the jobs consumer. Unit tests pass
    `uow_factory`/`queries` fakes with RELAY_IN_PROCESS and CONSUME_JOBS off, and no database opens.
    """
    base = config.base
    needs_db = uow_factory is None or queries is None or config.consume_jobs or (
        relay is None and base.relay_in_process)
    if database is None and needs_db:
        database = start_foundation(base, MIGRATIONS, produces=topics.PRODUCES, consumes=topics.CONSUMES)
    engine: Engine | None = database.engine if database is not None else None
    if relay is None and base.relay_in_process and engine is not None:
        relay = outbox_relay(base, engine)
    metrics = metrics or PrometheusMetrics()
    if uow_factory is None:
        def uow_factory() -> AbstractLedgerUnitOfWork:
            return SqlAlchemyLedgerUnitOfWork(engine)
    queries = queries or SqlAlchemyLedgerQueries(engine)
    wake = relay.wake if relay is not None else None

    batcher = ledger_batcher(uow_factory, clock, metrics, service=SERVICE, max_batch=config.batch_max,
                             threads=config.batch_workers, after_commit=wake)
    ledger = Ledger(batcher, queries, run_blocking or (database.run if database else _to_thread), clock, metrics,
                    max_amount=config.max_amount)
    sweeper = ExpirySweeper(queries, batcher, clock, service=SERVICE,
                            interval_seconds=config.expiry_interval_seconds)
    components: list[Component] = [relay] if relay is not None else []
    components += [batcher, sweeper]
    if config.consume_jobs:
        assert engine is not None
        components.append(jobs_returns_consumer(base, engine, clock, metrics, after_commit=wake))
    return ConnectsApp(
        config=base,
        services=[ServiceRegistration(SERVICE_NAME, connects_pb2_grpc.add_ConnectsServiceServicer_to_server,
                                      ConnectsServicer(ledger), POLICY)],
        components=components,
        on_close=[database.close] if database is not None else [],
        ledger=ledger,
    )


def jobs_returns_consumer(base: ServiceConfig, engine: Engine, clock: Callable[[], datetime], metrics: Metrics, *,
                          after_commit: Callable[[], None] | None) -> IdempotentConsumer:
    """marketplace.jobs.v1 -> returned Connects; `after_commit` (the relay's wake) runs after each event commits."""
    return consumer(base, engine, jobs_consumer.GROUP_ID, [topics.MARKETPLACE_JOBS], jobs_handler(clock, metrics),
                    after_commit=after_commit)


def jobs_handler(clock: Callable[[], datetime], metrics: Metrics) -> Handler:
    """The marketplace.jobs.v1 handler over the ledger's SQL adapters, bound to the consumer's transaction."""
    return jobs_consumer.make_handler(clock, metrics, lambda conn: SqlAlchemyLedgerUnitOfWork(connection=conn),
                                      lambda conn: SqlAlchemyLedgerQueries(connection=conn))


SPEC = ServiceSpec(SERVICE, ConnectsConfig.from_env, bootstrap, MIGRATIONS)
