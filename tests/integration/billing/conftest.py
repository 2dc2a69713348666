"""Billing's service layer on real PostgreSQL and Kafka, against the real connects service (a process)."""

from __future__ import annotations

import pytest

from services.billing.adapters.migrations import MIGRATIONS
from services.kit.db import make_engine
from services.kit.migrations import upgrade
from tests.e2e.conftest import launch, secret_file  # noqa: F401 - fixtures used here

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
