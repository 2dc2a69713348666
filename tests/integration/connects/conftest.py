"""A fresh PostgreSQL database per test session for the ledger, migrated once."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from services.connects.adapters.migrations import MIGRATIONS
from services.connects.adapters.repository import SqlAlchemyLedgerQueries, SqlAlchemyLedgerUnitOfWork
from services.connects.service_layer import handlers
from services.connects.service_layer.handlers import Envelope
from services.connects.service_layer.unit_of_work import RequestIdConflict
from services.kit.db import make_engine
from services.kit.migrations import upgrade

pytestmark = pytest.mark.integration


def now() -> datetime:
    return datetime.now(UTC)


def execute_one(uow_factory, cmd, caller="tests", at=None):
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
