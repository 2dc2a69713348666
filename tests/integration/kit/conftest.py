"""Real PostgreSQL (a throwaway database per test) and real Kafka (random topics per test)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa
from kafka.errors import KafkaError

from services.kit.db import make_engine
from services.kit.kafka import dlq_topic, ensure_topics
from tests.integration.kit.support import create_tables


@pytest.fixture(scope="session")
def kafka(kafka_bootstrap: str) -> str:
    """The bootstrap address, after checking the broker answers (fail, never skip)."""
    try:
        ensure_topics(kafka_bootstrap, {"kit.test.ping": 1})
    except KafkaError as exc:
        pytest.fail(f"Kafka at {kafka_bootstrap} is not usable ({exc!r}): run deploy/local/kafka.sh start")
    return kafka_bootstrap


@pytest.fixture
def engine(create_database: Callable[[str], str]) -> Iterator[sa.Engine]:
    """A fresh PostgreSQL database with the outbox, processed_events and a balances table."""
    try:
        url = create_database("kit")
    except sa.exc.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not reachable ({exc.orig}): run deploy/local/postgres.sh start")
    engine = make_engine(url, pool_size=5)
    create_tables(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def new_topic(kafka: str) -> Callable[..., str]:
    """Factory: a random topic (and its .dlq) that no other test uses."""

    def make(partitions: int = 3) -> str:
        name = f"kit.test.{uuid.uuid4().hex[:12]}"
        ensure_topics(kafka, {name: partitions, dlq_topic(name): 1})
        return name

    return make


