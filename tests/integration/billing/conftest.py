"""Billing on real PostgreSQL and Kafka against the real connects service.

Billing's service layer runs against connects as a process (`connects_process`); the books run beside an
in-process connects with a movable clock (`connects`): each books test gets its own connects (database, topic
namespace) and its own billing database, so the books see exactly the ledger events the test caused.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pytest
import pytest_asyncio
import sqlalchemy as sa
from adsmon.connects.v1 import connects_pb2_grpc

from services.billing.adapters.migrations import MIGRATIONS
from services.billing.adapters.revenue_tables import revenue_transactions
from services.billing.adapters.topics import CONNECTS_LEDGER as LEDGER_TOPIC
from services.billing.entrypoints.revenue_consumer import RevenueConsumer
from services.connects.adapters.tables import transactions as ledger_transactions
from services.connects.bootstrap import bootstrap
from services.connects.config import ConnectsConfig
from services.kit.clients import channel
from services.kit.db import make_engine
from services.kit.migrations import upgrade
from services.kit.server import App, Server
from tests.conftest import unique
from tests.e2e.conftest import launch, secret_file  # noqa: F401 - fixtures used here
from tests.unit.billing.revenue_fakes import migrate_books

pytestmark = pytest.mark.integration


@pytest.fixture
def billing_engine(create_database):
    engine = make_engine(create_database("billing"), pool_size=20)
    upgrade(engine, MIGRATIONS)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def connects_process(launch):  # noqa: F811 - the e2e fixture imported above
    process = launch("connects")
    yield process
    process.stop()


class MovableClock:
    """Real time plus an offset the test moves forward (lots expire a year after issue)."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


@dataclass
class Connects:
    app: App
    clock: MovableClock
    prefix: str
    engine: sa.Engine
    secret: bytes

    def stub(self, caller: str) -> connects_pb2_grpc.ConnectsServiceStub:
        return connects_pb2_grpc.ConnectsServiceStub(
            channel(f"127.0.0.1:{self.app.grpc_port}", secret=self.secret, caller=caller))

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.app.grpc_port}"

    def transaction_count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(ledger_transactions)).scalar_one())


@pytest_asyncio.fixture
async def connects(create_database, auth_secret, kafka_bootstrap) -> AsyncIterator[Connects]:
    url = create_database("connects_books")
    prefix = unique("books") + "."
    env = {"ADSMON_CONNECTS_DATABASE_URL": url, "ADSMON_KAFKA_BOOTSTRAP": kafka_bootstrap,
           "ADSMON_TRANSPORT": "plaintext",
           "ADSMON_AUTH_SECRET": auth_secret.decode(), "ADSMON_CONNECTS_EXPIRY_INTERVAL_SECONDS": "0.3",
           "ADSMON_KAFKA_GROUP_PREFIX": prefix, "ADSMON_KAFKA_TOPIC_PREFIX": prefix,
           "ADSMON_CONNECTS_CONSUME_JOBS": "false"}
    config = ConnectsConfig.from_env(env)
    clock = MovableClock()
    app = bootstrap(replace(config, base=replace(config.base, grpc_port=0, metrics_port=0)), clock=clock)
    app.drain_delay_seconds = 0
    srv = Server(app)
    await srv.start()
    engine = make_engine(url, pool_size=2)
    yield Connects(app, clock, prefix, engine, auth_secret)
    await srv.stop()
    engine.dispose()


@pytest.fixture
def books_engine(create_database) -> Iterator[sa.Engine]:
    engine = make_engine(create_database("billing_books"), pool_size=5)
    migrate_books(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def start_consumer(books_engine, kafka_bootstrap) -> Iterator[Callable[[Connects], RevenueConsumer]]:
    started: list[RevenueConsumer] = []

    def start(c: Connects, group: str | None = None) -> RevenueConsumer:
        consumer = RevenueConsumer(books_engine, kafka_bootstrap, group or unique("billing-revenue"),
                                   [LEDGER_TOPIC], service="billing-it", topic_prefix=c.prefix,
                                   poll_timeout_ms=200)
        consumer.start()
        started.append(consumer)
        return consumer

    yield start
    for consumer in started:
        consumer.stop()


def books_count(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(revenue_transactions)).scalar_one())


async def caught_up(c: Connects, engine: sa.Engine, timeout: float = 60.0) -> int:
    """Wait until the books hold every ledger transaction (and the ledger stopped writing)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        want = c.transaction_count()
        if want and books_count(engine) == want:
            await asyncio.sleep(0.5)
            if c.transaction_count() == want and books_count(engine) == want:
                return want
        await asyncio.sleep(0.2)
    raise AssertionError(f"books at {books_count(engine)} of {c.transaction_count()} ledger transactions")
