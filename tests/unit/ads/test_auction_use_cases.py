"""PlaceBid, interactions, close and settlement through the use cases: what the ledger sees, exactly."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from services.ads.adapters.tables import steps
from services.ads.domain import errors
from services.ads.domain.auction import CloseReason, Interaction, is_placebo
from services.ads.service_layer import auctions, settlement
from services.ads.service_layer.auctions import AuctionSettings, PlaceBid, RecordInteraction
from services.kit.errors import AlreadyExists, FailedPrecondition, InvalidArgument, Unavailable
from tests.conftest import unique
from tests.unit.ads.fakes import Clock, FakeConnects

SETTINGS = AuctionSettings(placebo_share=0.0)


def organic_job() -> str:
    while is_placebo(job := unique("job"), 0.02):
        pass
    return job


def place(uow_factory, ledger: FakeConnects, clock: Clock, job: str, proposal: str, amount: int,
          freelancer: str | None = None, request_id: str | None = None):  # type: ignore[no-untyped-def]
    freelancer = freelancer or f"f-{proposal}"
    if freelancer not in ledger.available:
        ledger.fund(freelancer, 100)
    cmd = PlaceBid(request_id or unique("rq"), job, proposal, freelancer, amount)
    return auctions.place_bid(uow_factory, ledger, cmd, clock(), SETTINGS)


def settle_all(uow_factory, ledger: FakeConnects, clock: Clock) -> None:  # type: ignore[no-untyped-def]
    while settlement.settle_due(uow_factory, ledger, clock):
        pass


def test_a_bid_holds_its_connects_and_ranks(uow_factory, ledger, clock) -> None:
    job = organic_job()
    result = place(uow_factory, ledger, clock, job, "p1", 7)
    assert result.bid.rank == 1 and result.bid.boosted and result.bid.state == "HELD" and not result.raised
    assert ledger.held("f-p1") == 7 and ledger.available["f-p1"] == 93
    (hold,) = ledger.holds.values()
    assert hold.reference == f"job:{job}/proposal:p1/boost"
    view = auctions.get_auction(uow_factory, job)
    assert view.status == "OPEN" and view.closes_at - view.opened_at == timedelta(days=7)


def test_a_repeated_place_bid_returns_the_first_answer_and_holds_once(uow_factory, ledger, clock) -> None:
    job = organic_job()
    first = place(uow_factory, ledger, clock, job, "p1", 7, request_id="rq-1")
    again = place(uow_factory, ledger, clock, job, "p1", 7, request_id="rq-1")
    assert again == first
    assert [c for c in ledger.calls if c[0] == "hold"] == [("hold", f"ads:bid:{_bid_id(uow_factory, job)}:hold")]
    with pytest.raises(AlreadyExists) as reused:
        place(uow_factory, ledger, clock, job, "p1", 8, request_id="rq-1")
    assert reused.value.reason == "REQUEST_ID_REUSED"


def _bid_id(uow_factory, job: str) -> str:  # type: ignore[no-untyped-def]
    with uow_factory() as uow:
        auction = uow.auctions.get(job, lock=False)
    return next(iter(auction.bids.values())).bid_id


def test_a_bidder_without_enough_connects_is_refused_and_nothing_is_held(uow_factory, ledger, clock) -> None:
    job = organic_job()
    ledger.fund("poor", 3)
    with pytest.raises(FailedPrecondition) as refused:
        place(uow_factory, ledger, clock, job, "p1", 4, freelancer="poor")
    assert refused.value.reason == "INSUFFICIENT_CONNECTS"
    assert ledger.held("poor") == 0 and ledger.available["poor"] == 3
    assert auctions.get_auction(uow_factory, job).bids == ()
    place(uow_factory, ledger, clock, job, "p1", 3, freelancer="poor")  # a retry is judged afresh
    assert ledger.held("poor") == 3


@pytest.mark.parametrize("amount, error, reason", [(0, FailedPrecondition, "BID_TOO_LOW"),
                                                   (-5, FailedPrecondition, "BID_TOO_LOW"),
                                                   (10**12, InvalidArgument, "INVALID_FIELD")])
def test_zero_negative_and_absurd_bids_get_clear_errors(uow_factory, ledger, clock, amount, error, reason) -> None:
    with pytest.raises(error) as refused:
        place(uow_factory, ledger, clock, organic_job(), "p1", amount)
    assert refused.value.reason == reason and refused.value.metadata["field"] == "bid_connects"
    assert ledger.calls == []


def test_a_proposal_id_with_control_characters_is_refused_before_an_auction_opens(uow_factory, ledger,
                                                                                    clock) -> None:
    job = organic_job()
    with pytest.raises(InvalidArgument) as refused:
        place(uow_factory, ledger, clock, job, "p\x15\r1", 2)
    assert refused.value.metadata["field"] == "proposal_id"
    assert ledger.calls == []
    with pytest.raises(errors.AuctionNotFound):  # found by the fuzzer: the auction used to open, then connects refused
        auctions.get_auction(uow_factory, job)


def test_unknown_jobs_and_closed_auctions_get_clear_errors(uow_factory, ledger, clock) -> None:
    with pytest.raises(errors.AuctionNotFound):
        auctions.get_auction(uow_factory, "never-seen")
    with pytest.raises(errors.AuctionNotFound):
        auctions.close_auction(uow_factory, unique("rq"), "never-seen", CloseReason.MANUAL, clock(), SETTINGS)
    job = organic_job()
    place(uow_factory, ledger, clock, job, "p1", 2)
    auctions.close_auction(uow_factory, unique("rq"), job, CloseReason.MANUAL, clock(), SETTINGS)
    with pytest.raises(errors.AuctionClosed):
        place(uow_factory, ledger, clock, job, "p2", 2)
    with pytest.raises(InvalidArgument):
        place(uow_factory, ledger, clock, "", "p2", 2)


def test_a_raise_grows_the_hold_by_the_difference(uow_factory, ledger, clock) -> None:
    job = organic_job()
    place(uow_factory, ledger, clock, job, "p1", 4)
    clock.advance(hours=1)
    result = place(uow_factory, ledger, clock, job, "p1", 9)
    assert result.raised and result.bid.bid_connects == 9
    assert ledger.held("f-p1") == 9 and ledger.available["f-p1"] == 91
    with pytest.raises(FailedPrecondition) as low:
        place(uow_factory, ledger, clock, job, "p1", 9)
    assert low.value.reason == "BID_TOO_LOW"


def test_a_bid_interrupted_by_a_ledger_outage_is_held_once_by_the_retry(uow_factory, ledger, clock) -> None:
    job = organic_job()
    ledger.fund("f1", 50)
    ledger.down = True
    cmd = PlaceBid("rq-outage", job, "p1", "f1", 5)
    with pytest.raises(Unavailable):
        auctions.place_bid(uow_factory, ledger, cmd, clock(), SETTINGS)
    assert auctions.get_auction(uow_factory, job).bids == ()  # pending: not ranked
    ledger.down = False
    assert auctions.place_bid(uow_factory, ledger, cmd, clock(), SETTINGS).bid.state == "HELD"
    assert ledger.held("f1") == 5
    holds = [c for c in ledger.calls if c[0] == "hold"]
    assert len(holds) == 2 and len(set(holds)) == 1  # the same ledger request id both times


def test_a_bid_whose_client_never_retried_is_finished_by_the_worker(uow_factory, ledger, clock) -> None:
    job = organic_job()
    ledger.fund("f1", 50)
    ledger.down = True
    with pytest.raises(Unavailable):
        auctions.place_bid(uow_factory, ledger, PlaceBid("rq-x", job, "p1", "f1", 5), clock(), SETTINGS)
    ledger.down = False
    assert auctions.resolve_pending_bids(uow_factory, ledger, clock(), SETTINGS) == 0  # still within grace
    clock.advance(minutes=1)
    assert auctions.resolve_pending_bids(uow_factory, ledger, clock(), SETTINGS) == 1
    assert [b.state for b in auctions.get_auction(uow_factory, job).bids] == ["HELD"]
    # the client's late retry gets the recorded answer, not a second hold
    again = auctions.place_bid(uow_factory, ledger, PlaceBid("rq-x", job, "p1", "f1", 5), clock(), SETTINGS)
    assert again.bid.bid_connects == 5 and ledger.held("f1") == 5


def test_settlement_captures_top_four_and_interacted_bids_and_releases_the_rest(uow_factory, ledger, clock) -> None:
    job = organic_job()
    for i, amount in enumerate([3, 4, 5, 6]):
        place(uow_factory, ledger, clock, job, f"p{i}", amount)
        clock.advance(minutes=1)
    auctions.record_interaction(uow_factory, RecordInteraction(unique("rq"), job, "p0", Interaction.MESSAGED),
                                clock())
    for i, amount in enumerate([10, 11, 12, 13], start=4):
        place(uow_factory, ledger, clock, job, f"p{i}", amount)
    auctions.close_auction(uow_factory, unique("rq"), job, CloseReason.FIRST_HIRE, clock(), SETTINGS)
    assert auctions.get_auction(uow_factory, job).status == "CLOSING"
    settle_all(uow_factory, ledger, clock)
    view = auctions.get_auction(uow_factory, job)
    assert view.status == "CLOSED"
    charged = {b.proposal_id: b.bid_connects for b in view.bids if b.state == "CHARGED"}
    assert charged == {"p0": 3, "p4": 10, "p5": 11, "p6": 12, "p7": 13}
    assert {b.proposal_id for b in view.bids if b.state == "RELEASED"} == {"p1", "p2", "p3"}
    for i, amount in enumerate([3, 4, 5, 6, 10, 11, 12, 13]):
        paid = amount if f"p{i}" in charged else 0
        assert ledger.available[f"f-p{i}"] == 100 - paid and ledger.held(f"f-p{i}") == 0
        assert ledger.spent.get(f"f-p{i}", 0) == paid
    calls = len(ledger.calls)
    settle_all(uow_factory, ledger, clock)  # a finished close run again changes nothing
    auctions.close_auction(uow_factory, unique("rq"), job, CloseReason.MANUAL, clock(), SETTINGS)
    settle_all(uow_factory, ledger, clock)
    assert len(ledger.calls) == calls


def test_settlement_waits_out_a_ledger_outage_then_finishes(uow_factory, ledger, clock) -> None:
    job = organic_job()
    place(uow_factory, ledger, clock, job, "p1", 5)
    auctions.close_auction(uow_factory, unique("rq"), job, CloseReason.MANUAL, clock(), SETTINGS)
    ledger.down = True
    assert settlement.settle_due(uow_factory, ledger, clock) == 1
    assert settlement.settle_due(uow_factory, ledger, clock) == 0  # backing off
    ledger.down = False
    clock.advance(seconds=31)
    settle_all(uow_factory, ledger, clock)
    assert auctions.get_auction(uow_factory, job).status == "CLOSED"
    assert ledger.spent["f-p1"] == 5


def test_a_step_answered_but_not_recorded_is_replayed_after_its_lease_without_a_second_capture(
        uow_factory, ledger, clock, engine) -> None:
    job = organic_job()
    place(uow_factory, ledger, clock, job, "p1", 5)
    auctions.close_auction(uow_factory, unique("rq"), job, CloseReason.MANUAL, clock(), SETTINGS)
    with uow_factory() as uow:  # a replica claims the step, the ledger captures, the replica dies
        (claimed,) = uow.steps.claim(clock(), timedelta(seconds=30), 10)
        uow.commit()
    ledger.capture(claimed.step.request_id, claimed.step.hold_id, claimed.step.amount)
    assert settlement.settle_due(uow_factory, ledger, clock) == 0  # leased
    clock.advance(seconds=31)
    settle_all(uow_factory, ledger, clock)
    assert auctions.get_auction(uow_factory, job).status == "CLOSED"
    assert ledger.spent["f-p1"] == 5 and ledger.available["f-p1"] == 95
    with engine.connect() as conn:
        assert conn.execute(sa.select(steps.c.outcome, steps.c.attempts)).all() == [("CAPTURED", 2)]


def test_a_cancelled_job_releases_every_hold(uow_factory, ledger, clock) -> None:
    job = organic_job()
    place(uow_factory, ledger, clock, job, "p1", 5)
    auctions.record_interaction(uow_factory, RecordInteraction(unique("rq"), job, "p1", Interaction.OFFER_SENT),
                                clock())
    auctions.close_auction(uow_factory, unique("rq"), job, CloseReason.JOB_CANCELLED, clock(), SETTINGS)
    settle_all(uow_factory, ledger, clock)
    assert ledger.available["f-p1"] == 100 and ledger.spent.get("f-p1", 0) == 0


def test_a_job_cancelled_while_settling_turns_unsent_captures_into_releases(uow_factory, ledger, clock) -> None:
    job = organic_job()
    place(uow_factory, ledger, clock, job, "p1", 5)
    auctions.close_auction(uow_factory, unique("rq"), job, CloseReason.EXPIRED, clock(), SETTINGS)
    with uow_factory() as uow:
        auctions.close(uow, job, CloseReason.JOB_CANCELLED, clock(), SETTINGS, auctions.NoMetrics(), create=True)
        uow.commit()
    settle_all(uow_factory, ledger, clock)
    assert ledger.available["f-p1"] == 100
    assert auctions.get_auction(uow_factory, job).close_reason == "JOB_CANCELLED"


def test_auctions_close_by_themselves_seven_days_after_posting(uow_factory, ledger, clock) -> None:
    job = organic_job()
    place(uow_factory, ledger, clock, job, "p1", 5)
    clock.advance(days=7, seconds=-1)
    assert auctions.close_due_auctions(uow_factory, clock(), SETTINGS) == 0
    clock.advance(seconds=1)
    assert auctions.close_due_auctions(uow_factory, clock(), SETTINGS) == 1
    settle_all(uow_factory, ledger, clock)
    view = auctions.get_auction(uow_factory, job)
    assert view.status == "CLOSED" and view.close_reason == "EXPIRED" and ledger.spent["f-p1"] == 5


def test_a_placebo_auction_holds_nothing_and_records_its_flag(uow_factory, ledger, clock) -> None:
    placebo = AuctionSettings(placebo_share=1.0)
    ledger.fund("f1", 10)
    job = unique("job")
    result = auctions.place_bid(uow_factory, ledger, PlaceBid(unique("rq"), job, "p1", "f1", 6), clock(), placebo)
    assert result.bid.state == "HELD" and not result.bid.boosted and result.bid.hold_id == ""
    assert ledger.calls == []
    view = auctions.close_auction(uow_factory, unique("rq"), job, CloseReason.EXPIRED, clock(), placebo)
    assert view.placebo and view.status == "CLOSED" and ledger.calls == []
