"""Shared by the connects integration tests: a fresh PostgreSQL database per session, migrated once; helpers
that run commands on it; the real server on its own database for the tests through gRPC; the books check."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime

import grpc
import pytest
import pytest_asyncio
import sqlalchemy as sa
from adsmon.connects.v1 import connects_pb2 as pb
from adsmon.connects.v1 import connects_pb2_grpc
from sqlalchemy.engine import Engine

from services.connects.adapters.migrations import MIGRATIONS
from services.connects.adapters.repository import SqlAlchemyLedgerQueries, SqlAlchemyLedgerUnitOfWork
from services.connects.bootstrap import bootstrap
from services.connects.config import ConnectsConfig
from services.connects.domain import commands as c
from services.connects.domain.model import LotSource
from services.connects.service_layer import handlers
from services.connects.service_layer.handlers import Envelope
from services.connects.service_layer.unit_of_work import RequestIdConflict
from services.kit.clients import channel
from services.kit.db import make_engine
from services.kit.migrations import upgrade
from services.kit.server import App, Server
from tests.conftest import error_info, unique

pytestmark = pytest.mark.integration


def now() -> datetime:
    return datetime.now(UTC)


def execute_one(uow_factory, cmd, caller="operator", at=None):
    """One command in its own transaction, retried on a concurrent duplicate like the batcher does."""
    for _ in range(5):
        try:
            (outcome,) = handlers.execute(uow_factory(), [Envelope(cmd, caller)], at or now())
            return outcome
        except RequestIdConflict:
            continue
    raise AssertionError("request id conflict did not resolve")


@pytest.fixture(scope="session")
def connects_url(create_database) -> str:
    return create_database("connects")


@pytest.fixture(scope="session")
def engine(connects_url: str) -> Iterator[Engine]:
    eng = make_engine(connects_url, pool_size=40)
    upgrade(eng, MIGRATIONS)
    yield eng
    eng.dispose()


@pytest.fixture
def uow_factory(engine: Engine):
    return lambda: SqlAlchemyLedgerUnitOfWork(engine)


@pytest.fixture
def queries(engine: Engine) -> SqlAlchemyLedgerQueries:
    return SqlAlchemyLedgerQueries(engine)


def assert_books_balance(engine: Engine) -> None:
    """Every invariant that must hold in the database after any workload."""
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT coalesce(sum(amount), 0) FROM postings")).scalar_one() == 0
        unbalanced = conn.execute(sa.text(
            "SELECT count(*) FROM (SELECT transaction_id FROM postings GROUP BY transaction_id "
            "HAVING sum(amount) <> 0) x")).scalar_one()
        assert unbalanced == 0
        mismatched = conn.execute(sa.text("""
            SELECT count(*) FROM wallets w
            LEFT JOIN (SELECT account_id, sum(remaining) r, sum(held) h FROM lots GROUP BY account_id) l
              ON l.account_id = w.account_id
            LEFT JOIN (SELECT substr(ledger_account, 8) a, sum(amount) s FROM postings
                       WHERE ledger_account LIKE 'wallet:%' GROUP BY 1) p ON p.a = w.account_id
            WHERE w.available <> coalesce(l.r, 0) OR w.held <> coalesce(l.h, 0)
               OR w.available <> coalesce(p.s, 0)""")).scalar_one()
        assert mismatched == 0
        held = conn.execute(sa.text("SELECT coalesce(sum(held), 0) FROM wallets")).scalar_one()
        open_holds = conn.execute(sa.text(
            "SELECT coalesce(sum(amount), 0) FROM holds WHERE status = 'OPEN'")).scalar_one()
        holds_account = conn.execute(sa.text(
            "SELECT coalesce(sum(amount), 0) FROM postings WHERE ledger_account = 'system:holds'")).scalar_one()
        assert held == open_holds == holds_account


def ok(outcome: handlers.Outcome) -> handlers.Receipt | None:
    """The receipt of an outcome that must have succeeded."""
    assert outcome.error is None, outcome.error
    return outcome.receipt


def fund(uow_factory: Callable[[], SqlAlchemyLedgerUnitOfWork], account: str, amount: int,
         at: datetime | None = None) -> handlers.Outcome:
    """Credit a PLAN_GRANT lot (dated `at`) in its own transaction."""
    out = execute_one(uow_factory, c.Credit(unique("r"), account, amount, LotSource.PLAN_GRANT), at=at)
    assert out.error is None, out.error
    return out


# ----- the real server, through gRPC ---------------------------------------------------------------------------

CALLERS = ("billing", "ads", "marketplace", "operator")


@pytest.fixture(scope="module")
def server_database_url(create_database) -> str:
    return create_database("connects_grpc")


@pytest.fixture(scope="module")
def server_engine(server_database_url: str) -> Iterator[Engine]:
    """An engine on the server's own database, to look at what the RPCs wrote."""
    eng = make_engine(server_database_url, pool_size=2)
    yield eng
    eng.dispose()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server(server_database_url, auth_secret, kafka_bootstrap) -> AsyncIterator[App]:
    """connects on a fresh database, free ports, a fast expiry sweeper and the jobs consumer."""
    env = {"ADSMON_CONNECTS_DATABASE_URL": server_database_url,
           "ADSMON_KAFKA_BOOTSTRAP": kafka_bootstrap, "ADSMON_TRANSPORT": "plaintext",
                                                      "ADSMON_AUTH_SECRET": auth_secret.decode(),
           "ADSMON_CONNECTS_EXPIRY_INTERVAL_SECONDS": "0.5", "ADSMON_KAFKA_GROUP_PREFIX": unique("test") + ".",
           "ADSMON_KAFKA_TOPIC_PREFIX": os.environ["ADSMON_KAFKA_TOPIC_PREFIX"]}
    config = ConnectsConfig.from_env(env)
    app = bootstrap(replace(config, base=replace(config.base, grpc_port=0, metrics_port=0)))
    app.drain_delay_seconds = 0
    srv = Server(app)
    await srv.start()
    yield app
    await srv.stop()


def stub_for(app: App, auth_secret: bytes, caller: str) -> connects_pb2_grpc.ConnectsServiceStub:
    return connects_pb2_grpc.ConnectsServiceStub(
        channel(f"127.0.0.1:{app.grpc_port}", secret=auth_secret, caller=caller))


@pytest.fixture
def stubs(server: App, auth_secret: bytes) -> dict[str, connects_pb2_grpc.ConnectsServiceStub]:
    return {name: stub_for(server, auth_secret, name) for name in CALLERS}


def error_of(exc: grpc.aio.AioRpcError) -> tuple[grpc.StatusCode, str, dict[str, str]]:
    """The code, ErrorInfo reason and metadata of a refused call (which must carry a rich status)."""
    info = error_info(exc)
    return exc.code(), info.reason, dict(info.metadata)


async def grpc_fund(stubs: dict[str, connects_pb2_grpc.ConnectsServiceStub], account: str,
                    amount: int) -> pb.CreditResponse:
    return await stubs["billing"].Credit(pb.CreditRequest(request_id=unique("r"), account_id=account, amount=amount,
                                                          source=pb.LOT_SOURCE_PURCHASE))
