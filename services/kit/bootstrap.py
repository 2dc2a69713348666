"""Start-up steps every service shares: database, Kafka topics, the outbox relay, consumers.

Relays and consumers are built here from the ServiceConfig, so every one of them
lands in the configured topic and group namespaces.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from typing import Any

from kafka.errors import KafkaError
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from services.kit.config import ServiceConfig
from services.kit.consumer import Handler, IdempotentConsumer
from services.kit.db import Database, check_connection, make_engine
from services.kit.kafka import ensure_topics, service_topics
from services.kit.migrations import Migrations, upgrade
from services.kit.outbox import OutboxRelay
from services.kit.startup import StartupError


def _reachable(bootstrap: str, timeout: float) -> None:
    errors = []
    for hostport in bootstrap.split(","):
        host, _, port = hostport.rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=timeout).close()
            return
        except OSError as exc:
            errors.append(f"{hostport}: {exc.strerror or exc}")
    raise StartupError(f"kafka unreachable at {'; '.join(errors)}")


def start_foundation(config: ServiceConfig, migrations: Migrations, *, produces: Sequence[str],
                     consumes: Sequence[str]) -> Database:
    """Open and migrate the database; create the topics the service produces and consumes (and their DLQs)."""
    # Both dependencies answer before anything is changed (migrations), so a bad setting fails in one line.
    _reachable(config.kafka_bootstrap, timeout=3.0)
    db = open_database(config.database_url, migrations, pool_size=config.db_pool_size)
    try:
        ensure_topics(config.kafka_bootstrap,
                      {config.kafka_topic_prefix + name: n for name, n in service_topics(produces, consumes).items()},
                      timeout_ms=15_000)
    except KafkaError as exc:
        db.close()
        raise StartupError(f"kafka unreachable at {config.kafka_bootstrap}: {type(exc).__name__}") from None
    return db


def migrate_database(engine: Engine, migrations: Migrations) -> None:
    """Bring the schema to the newest revision; a failure is one StartupError line."""
    try:
        upgrade(engine, migrations)
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
        raise StartupError(f"migrating the {migrations.service} database failed: {reason}") from None


def open_database(url: str, migrations: Migrations, *, pool_size: int = 10) -> Database:
    """Engine + connectivity check + migrations: what every service does first at start-up."""
    engine = make_engine(url, pool_size=pool_size)
    check_connection(engine)
    try:
        migrate_database(engine, migrations)
    except StartupError:
        engine.dispose()
        raise
    return Database(engine, workers=pool_size)


def outbox_relay(config: ServiceConfig, engine: Engine) -> OutboxRelay:
    """The service's relay, publishing into the configured topic namespace."""
    return OutboxRelay(engine, config.kafka_bootstrap, service=config.service,
                       topic_prefix=config.kafka_topic_prefix)


def consumer(config: ServiceConfig, engine: Engine, group: str, topics: Sequence[str], handler: Handler, *,
             after_commit: Callable[[], None] | None = None, **options: Any) -> IdempotentConsumer:
    """An idempotent consumer in the configured group and topic namespaces.

    `after_commit` runs after each applied record's transaction commits (e.g. `relay.wake`).
    """
    return IdempotentConsumer(engine, config.kafka_bootstrap, config.consumer_group(group), topics, handler,
                              service=config.service, topic_prefix=config.kafka_topic_prefix,
                              after_commit=after_commit, **options)
