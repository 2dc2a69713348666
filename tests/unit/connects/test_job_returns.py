"""marketplace.jobs.v1 -> returned Connects, through the consumer bootstrap wires (SQLite, fake Kafka)."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime

import pytest
from adsmon.marketplace.v1 import jobs_pb2

from services.connects.adapters.migrations import MIGRATIONS
from services.connects.adapters.repository import SqlAlchemyLedgerUnitOfWork
from services.connects.bootstrap import jobs_returns_consumer
from services.connects.domain import commands as c
from services.connects.domain.model import LotSource, SpendReason
from services.connects.service_layer import handlers
from services.connects.service_layer.handlers import Envelope
from services.kit.db import make_engine
from services.kit.kafka import encode_event, make_event
from services.kit.migrations import upgrade
from tests.conftest import unique
from tests.support.connects import connects_config
from tests.support.kafka import Rec

NOW = datetime(2026, 3, 1, tzinfo=UTC)


class NoDlq:
    def send(self, *a, **kw):
        raise AssertionError("nothing should be dead-lettered")

    def close(self, timeout=None):
        pass


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "connects.db"


@pytest.fixture
def engine(db_path):
    engine = make_engine(f"sqlite:///{db_path}", pool_size=2)
    upgrade(engine, MIGRATIONS)
    yield engine
    engine.dispose()


def committed_outbox_rows(db_path) -> int:
    """Read as the relay would, on its own connection: only committed rows are visible (WAL, no lock taken)."""
    conn = sqlite3.connect(db_path, timeout=0.1)
    try:
        return conn.execute("SELECT count(*) FROM outbox").fetchone()[0]
    finally:
        conn.close()


def test_the_relay_is_woken_only_after_the_consumers_commit_of_the_returns(engine, db_path):
    acct, job = unique("a"), unique("job")
    for cmd in (c.Credit(unique("r"), acct, 10, LotSource.BONUS),
                c.Spend(unique("r"), acct, 4, SpendReason.PROPOSAL, f"job:{job}")):
        (out,) = handlers.execute(SqlAlchemyLedgerUnitOfWork(engine), [Envelope(cmd, "operator")], NOW)
        assert out.error is None
    before = committed_outbox_rows(db_path)
    seen_at_wake: list[int] = []
    consumer = jobs_returns_consumer(connects_config().base, engine, lambda: NOW, handlers.NullMetrics(),
                                     after_commit=lambda: seen_at_wake.append(committed_outbox_rows(db_path)))
    consumer._dlq_producer = NoDlq()
    event = make_event(jobs_pb2.JobCancelled(job_id=job), job, "marketplace")
    assert consumer.process(Rec("marketplace.jobs.v1", 0, 0, job.encode(), encode_event(event))) == "applied"
    # Woken once, and by then the RETURN's outbox row was committed (a wake-up before the commit sees `before`).
    assert seen_at_wake == [before + 1]
