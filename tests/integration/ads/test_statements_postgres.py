"""ads' queued statements on PostgreSQL (adapters/statements.py): writes wait for the next read or the COMMIT,
yet every later statement sees them, a rollback drops them, and a conflicting queued insert turns into the
error its caller expects."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from services.ads.adapters.repository import SqlAlchemyAdsUnitOfWork
from services.ads.adapters.tables import auctions
from services.ads.domain.auction import Auction
from services.ads.service_layer.unit_of_work import RequestInProgress
from tests.conftest import unique
from tests.support.pg_wire import wire

pytestmark = pytest.mark.integration
NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def _auction(job: str) -> Auction:
    return Auction.open(job, opened_at=NOW, length=timedelta(days=7), placebo=False)


def test_queued_writes_go_with_the_commit_in_one_round_trip(
        ads_engine: Engine, uow_factory: Callable[[], SqlAlchemyAdsUnitOfWork]) -> None:
    job = unique("job")
    with wire(ads_engine) as sent, uow_factory() as uow:
        uow.auctions.add(_auction(job))
        uow.requests.complete(unique("r"), "{}")
        uow.commit()
    # BEGIN, then the INSERT, the UPDATE and COMMIT together
    assert (sent["INSERT"], sent["UPDATE"], sent["COMMIT"], sent["ROUND_TRIPS"]) == (1, 1, 1, 2)
    with ads_engine.connect() as conn:
        assert conn.execute(sa.select(auctions.c.status).where(auctions.c.job_id == job)).scalar_one() == "OPEN"


def test_a_read_after_a_queued_write_sees_it_and_a_rollback_drops_the_queue(
        uow_factory: Callable[[], SqlAlchemyAdsUnitOfWork], ads_engine: Engine) -> None:
    job, dropped = unique("job"), unique("job")
    with uow_factory() as uow:
        uow.auctions.add(_auction(job))
        seen = uow.auctions.get(job, lock=False)  # the queued insert goes first, in the same round trip
        assert seen is not None and seen.job_id == job
        uow.commit()
    with uow_factory() as uow:
        uow.auctions.add(_auction(dropped))  # queued, never sent: no commit
    with ads_engine.connect() as conn:
        found = set(conn.execute(sa.select(auctions.c.job_id).where(auctions.c.job_id.in_([job, dropped]))).scalars())
    assert found == {job}


def test_another_repositorys_statement_runs_after_the_queued_writes(
        uow_factory: Callable[[], SqlAlchemyAdsUnitOfWork]) -> None:
    job = unique("job")
    with uow_factory() as uow:
        uow.auctions.add(_auction(job))
        assert uow.sql is not None and uow.sql.pending
        # the badge repository sends its own SQLAlchemy statement: the engine hook sends the queue first
        assert uow.badges.get(unique("fl")) is None
        assert not uow.sql.pending
        count = uow.conn.execute(sa.select(sa.func.count()).select_from(auctions)
                                 .where(auctions.c.job_id == job)).scalar_one()
        assert count == 1
        uow.commit()


def test_a_queued_auction_insert_that_lost_the_race_raises_request_in_progress(
        uow_factory: Callable[[], SqlAlchemyAdsUnitOfWork]) -> None:
    job = unique("job")
    with uow_factory() as uow:
        uow.auctions.add(_auction(job))
        uow.commit()
    with pytest.raises(RequestInProgress), uow_factory() as uow:
        uow.auctions.add(_auction(job))  # as a first bid that did not see the auction another one opened
        uow.commit()
