"""The one place where the connects service is wired. Nothing connects at import time."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from adsmon.connects.v1 import connects_pb2_grpc

from services.connects.adapters.metrics import PrometheusMetrics
from services.connects.adapters.repository import SqlAlchemyLedgerQueries, SqlAlchemyLedgerUnitOfWork
from services.connects.adapters.tables import MIGRATIONS
from services.connects.config import ConnectsConfig
from services.connects.entrypoints import jobs_consumer
from services.connects.entrypoints.grpc_servicer import POLICY, SERVICE_NAME, ConnectsServicer
from services.connects.entrypoints.scheduler import ExpirySweeper
from services.connects.service_layer.batcher import Batcher
from services.connects.service_layer.ledger import Ledger
from services.kit.bootstrap import consumer, outbox_relay, start_foundation
from services.kit.kafka import MARKETPLACE_JOBS_TOPIC
from services.kit.server import App, ServiceRegistration


def utc_now() -> datetime:
    return datetime.now(UTC)


async def bootstrap(config: ConnectsConfig | None = None, *, clock: Callable[[], datetime] = utc_now) -> App:
    """Open and migrate the database, check Kafka, and assemble the server, batcher, relay, sweeper, consumer."""
    config = config or ConnectsConfig.from_env()
    db, relay = start_foundation(config.base, MIGRATIONS)
    engine = db.engine
    metrics = PrometheusMetrics()
    notify = relay.notify if config.relay_in_process else None
    batcher = Batcher(lambda: SqlAlchemyLedgerUnitOfWork(engine), clock, metrics, max_batch=config.batch_max,
                      workers=config.batch_workers, on_commit=notify)
    ledger = Ledger(batcher, SqlAlchemyLedgerQueries(engine), db.run, clock, max_amount=config.max_amount)
    sweeper = ExpirySweeper(ledger, clock, interval_seconds=config.expiry_interval_seconds)
    components: list = [relay] if config.relay_in_process else []  # type: ignore[type-arg]
    components += [batcher, sweeper]
    if config.consume_jobs:
        components.append(consumer(config.base, engine, jobs_consumer.GROUP_ID, [MARKETPLACE_JOBS_TOPIC],
                                   jobs_consumer.make_handler(clock, metrics, notify)))
    servicer = ConnectsServicer(ledger)
    return App(
        config=config.base,
        services=[ServiceRegistration(SERVICE_NAME, connects_pb2_grpc.add_ConnectsServiceServicer_to_server,
                                      servicer, POLICY)],
        components=components,
        on_close=[db.close],
    )


def run_relay(config: ConnectsConfig | None = None) -> int:
    """`python -m services.connects relay`: only the outbox relay (safe beside other relays: SKIP LOCKED)."""
    import signal
    import threading

    from prometheus_client import start_http_server

    from services.kit.db import make_engine

    config = config or ConnectsConfig.from_env()
    engine = make_engine(config.base.database_url, pool_size=2)
    relay = outbox_relay(config.base, engine)
    start_http_server(config.base.metrics_port, addr=config.base.metrics_host)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    relay.start()
    stop.wait()
    relay.stop()
    engine.dispose()
    return 0
