"""The marketplace.jobs.v1 handler inside a consumer's transaction: posts open, hires close, cancellations
release everything, interactions count."""

from __future__ import annotations

from datetime import UTC, timedelta

import pytest
import sqlalchemy as sa
from adsmon.marketplace.v1 import jobs_pb2
from google.protobuf.message import Message

from services.ads.adapters.tables import steps
from services.ads.domain import errors
from services.ads.domain.auction import is_placebo
from services.ads.entrypoints import jobs_consumer
from services.ads.service_layer import auctions
from services.ads.service_layer.auctions import AuctionSettings, PlaceBid
from services.ads.service_layer.metrics import NoMetrics
from services.kit.kafka import make_event
from tests.conftest import unique
from tests.unit.ads.fakes import Clock, FakeConnects

SETTINGS = AuctionSettings(placebo_share=0.0)


def deliver(engine: sa.Engine, clock: Clock, job: str, message: Message) -> None:
    handle = jobs_consumer.make_handler(clock, SETTINGS, NoMetrics())
    with engine.begin() as conn:  # the consumer's transaction
        handle(conn, make_event(message, job, "marketplace"), object())


def organic_job() -> str:
    while is_placebo(job := unique("job"), 0.02):
        pass
    return job


def test_job_posted_opens_the_auction_for_seven_days_from_posting(engine, clock: Clock, uow_factory) -> None:
    job = organic_job()
    posted = jobs_pb2.JobPosted(job_id=job)
    posted.posted_at.FromDatetime(clock() - timedelta(hours=1))
    deliver(engine, clock, job, posted)
    view = auctions.get_auction(uow_factory, job)
    assert view.opened_at == clock() - timedelta(hours=1) and view.closes_at == view.opened_at + timedelta(days=7)
    assert view.opened_at.tzinfo == UTC


def test_hire_closes_with_captures_and_cancel_releases_all(engine, clock: Clock, uow_factory,
                                                          ledger: FakeConnects) -> None:
    hired, cancelled = organic_job(), organic_job()
    ledger.fund("f1", 50)
    for job in (hired, cancelled):
        auctions.place_bid(uow_factory, ledger, PlaceBid(unique("rq"), job, "p1", "f1", 5), clock(), SETTINGS)
    deliver(engine, clock, hired, jobs_pb2.ProposalInteraction(job_id=hired, proposal_id="p1",
                                                               kind=jobs_pb2.INTERACTION_KIND_MESSAGED))
    assert auctions.get_auction(uow_factory, hired).bids[0].interacted_while_boosted
    deliver(engine, clock, hired, jobs_pb2.JobHired(job_id=hired, proposal_id="p1"))
    deliver(engine, clock, cancelled, jobs_pb2.JobCancelled(job_id=cancelled))
    deliver(engine, clock, cancelled, jobs_pb2.JobCancelled(job_id=cancelled))  # a replay changes nothing
    with engine.connect() as conn:
        actions = dict(conn.execute(sa.select(steps.c.job_id, steps.c.action)).all())
    assert actions == {hired: "CAPTURE", cancelled: "RELEASE"}
    assert auctions.get_auction(uow_factory, cancelled).close_reason == "JOB_CANCELLED"


def test_a_cancellation_of_an_unseen_job_leaves_a_closed_auction_that_refuses_bids(engine, clock: Clock,
                                                                                   uow_factory,
                                                                                   ledger: FakeConnects) -> None:
    job = organic_job()
    deliver(engine, clock, job, jobs_pb2.JobRemoved(job_id=job, policy_reason="spam"))
    assert auctions.get_auction(uow_factory, job).status == "CLOSED"
    ledger.fund("f1", 5)
    with pytest.raises(errors.AuctionClosed):
        auctions.place_bid(uow_factory, ledger, PlaceBid(unique("rq"), job, "p1", "f1", 2), clock(), SETTINGS)
    assert ledger.calls == []
