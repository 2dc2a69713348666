"""Helpers shared by the connects unit tests: a fixed clock, commands run through the service layer on the
fakes or on SQLite, and the SQLite engine for the SQL adapter."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from services.connects.adapters.migrations import MIGRATIONS
from services.connects.adapters.repository import SqlAlchemyLedgerUnitOfWork
from services.connects.domain import commands as c
from services.connects.domain.model import LotSource
from services.connects.service_layer import handlers
from services.connects.service_layer.handlers import Envelope
from services.kit.db import make_engine
from services.kit.migrations import upgrade
from tests.conftest import unique
from tests.unit.connects.fakes import FakeLedgerStore, FakeUnitOfWork

NOW = datetime(2026, 3, 1, tzinfo=UTC)
YEAR = timedelta(days=365)


def run(store: FakeLedgerStore, *cmds: handlers.AnyCommand, caller: str = "operator", now: datetime = NOW,
        metrics: handlers.Metrics | None = None) -> list[handlers.Outcome]:
    """One batch of commands through the service layer on the fakes."""
    return handlers.execute(store.uow(), [Envelope(cmd, caller) for cmd in cmds], now, metrics)


def sql_run(engine: Engine, *cmds: handlers.AnyCommand, caller: str = "operator",
            now: datetime = NOW) -> list[handlers.Outcome]:
    """One batch of commands through the service layer on the SQL adapter."""
    return handlers.execute(SqlAlchemyLedgerUnitOfWork(engine), [Envelope(cmd, caller) for cmd in cmds], now)


def ok(outcome: handlers.Outcome) -> handlers.Receipt | None:
    """The receipt of an outcome that must have succeeded."""
    assert outcome.error is None, outcome.error
    return outcome.receipt


def run_ok(store: FakeLedgerStore, cmd: handlers.AnyCommand, at: datetime = NOW,
           caller: str = "operator") -> handlers.Receipt | None:
    """Run one command that must succeed; its receipt."""
    return ok(run(store, cmd, caller=caller, now=at)[0])


class FlakyUnitOfWorks:
    """A unit-of-work factory whose `fail_on`-th unit of work fails at save, as a dropped connection would."""

    def __init__(self, store: FakeLedgerStore, fail_on: int = 2) -> None:
        self.store, self.fail_on, self.calls = store, fail_on, 0

    def __call__(self) -> FakeUnitOfWork:
        uow = self.store.uow()
        self.calls += 1
        if self.calls == self.fail_on:
            uow.fail_on_save = RuntimeError("server closed the connection unexpectedly")
        return uow


def credit(account: str, amount: int = 10, source: LotSource = LotSource.PLAN_GRANT,
           rid: str | None = None) -> c.Credit:
    return c.Credit(rid or unique("r"), account, amount, source)


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path}/connects.db", pool_size=2)
    upgrade(engine, MIGRATIONS)
    yield engine
    engine.dispose()
