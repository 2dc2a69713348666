"""Ads' use cases over the real SQLAlchemy unit of work on a throwaway SQLite file, a fake ledger and a
clock the test moves."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from services.ads.adapters.migrations import MIGRATIONS
from services.ads.adapters.repository import SqlAlchemyAdsUnitOfWork
from services.kit.db import make_engine
from services.kit.migrations import upgrade
from tests.unit.ads.fakes import Clock, FakeConnects


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    eng = make_engine(f"sqlite:///{tmp_path / 'ads.db'}", pool_size=4)
    upgrade(eng, MIGRATIONS)
    yield eng
    eng.dispose()


@pytest.fixture
def uow_factory(engine: Engine) -> Callable[[], SqlAlchemyAdsUnitOfWork]:
    return lambda: SqlAlchemyAdsUnitOfWork(engine)


@pytest.fixture
def ledger() -> FakeConnects:
    return FakeConnects()


@pytest.fixture
def clock() -> Clock:
    return Clock()
