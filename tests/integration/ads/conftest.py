"""A fresh PostgreSQL database for ads' integration tests, migrated once."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from sqlalchemy.engine import Engine

from services.ads.adapters.migrations import MIGRATIONS
from services.ads.adapters.repository import SqlAlchemyAdsUnitOfWork
from services.kit.db import make_engine
from services.kit.migrations import upgrade

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def ads_engine(create_database: Callable[[str], str]) -> Iterator[Engine]:
    eng = make_engine(create_database("ads"), pool_size=20)
    upgrade(eng, MIGRATIONS)
    yield eng
    eng.dispose()


@pytest.fixture
def uow_factory(ads_engine: Engine) -> Callable[[], SqlAlchemyAdsUnitOfWork]:
    return lambda: SqlAlchemyAdsUnitOfWork(ads_engine)
