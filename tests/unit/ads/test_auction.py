"""The auction's rules, on the pure aggregate with an explicit clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.ads.domain import errors
from services.ads.domain import events as ev
from services.ads.domain.auction import (
    Auction,
    AuctionStatus,
    BidState,
    CloseReason,
    Interaction,
    StepAction,
    is_placebo,
)

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def opened(placebo: bool = False) -> Auction:
    return Auction.open("job-1", opened_at=T0, length=timedelta(days=7), placebo=placebo)


def bid(auction: Auction, proposal: str, amount: int, at: datetime, freelancer: str | None = None) -> None:
    """Place and confirm a bid (the ledger said yes)."""
    auction.begin_bid(bid_id=f"b-{proposal}", proposal_id=proposal, freelancer_id=freelancer or f"f-{proposal}",
                             amount=amount, now=at)
    auction.confirm_bid(proposal, f"h-{proposal}", at)


def ranked(auction: Auction) -> list[str]:
    return [b.proposal_id for b in auction.ranking()]


def boosted(auction: Auction) -> list[str]:
    return [b.proposal_id for b in auction.boosted()]


def test_higher_bids_rank_first_and_ties_go_to_the_earlier_bid() -> None:
    a = opened()
    bid(a, "p1", 5, T0)
    bid(a, "p2", 9, T0 + timedelta(minutes=1))
    bid(a, "p3", 5, T0 + timedelta(minutes=2))
    bid(a, "p4", 5, T0)  # same instant as p1, placed after it
    assert ranked(a) == ["p2", "p1", "p4", "p3"]


def test_a_raise_keeps_the_original_bid_time_for_the_tie_break() -> None:
    a = opened()
    bid(a, "early", 3, T0)
    bid(a, "late", 6, T0 + timedelta(hours=1))
    b, raised = a.begin_bid(bid_id="ignored", proposal_id="early", freelancer_id="f-early", amount=6,
                            now=T0 + timedelta(hours=2))
    assert raised and b.pending_amount == 6 and b.amount == 3  # ranks at 3 until the ledger confirms
    assert ranked(a) == ["late", "early"]
    a.confirm_bid("early", "h-early", T0 + timedelta(hours=2))
    assert ranked(a) == ["early", "late"]
    assert any(isinstance(f, ev.BidRaised) and f.previous_bid_connects == 3 and f.bid_connects == 6 for f in a.facts)


def test_only_the_top_four_are_boosted_and_an_outbid_proposal_is_unboosted() -> None:
    a = opened()
    for i, amount in enumerate([4, 5, 6, 7]):
        bid(a, f"p{i}", amount, T0 + timedelta(minutes=i))
    assert boosted(a) == ["p3", "p2", "p1", "p0"]
    a.facts.clear()
    bid(a, "p9", 10, T0 + timedelta(minutes=9))
    assert boosted(a) == ["p9", "p3", "p2", "p1"]
    assert [f.proposal_id for f in a.facts if isinstance(f, ev.BidUnboosted)] == ["p0"]


def test_a_pending_bid_is_neither_ranked_nor_boosted_until_the_hold_is_confirmed() -> None:
    a = opened()
    a.begin_bid(bid_id="b1", proposal_id="p1", freelancer_id="f1", amount=50, now=T0)
    assert ranked(a) == [] and boosted(a) == []
    a.abandon_bid("p1", T0)  # the ledger refused
    assert a.bids == {}


@pytest.mark.parametrize("amount, error", [(0, errors.BidTooLow), (-3, errors.BidTooLow),
                                           (10_001, errors.BidTooHigh), (2**62, errors.BidTooHigh)])
def test_zero_negative_and_absurd_bids_are_refused(amount: int, error: type[Exception]) -> None:
    with pytest.raises(error):
        opened().begin_bid(bid_id="b", proposal_id="p", freelancer_id="f", amount=amount, now=T0)


def test_a_raise_must_be_above_the_current_bid_and_from_the_same_freelancer() -> None:
    a = opened()
    bid(a, "p1", 5, T0)
    with pytest.raises(errors.BidTooLow):
        a.begin_bid(bid_id="x", proposal_id="p1", freelancer_id="f-p1", amount=5, now=T0)
    with pytest.raises(errors.ProposalOwnerMismatch):
        a.begin_bid(bid_id="x", proposal_id="p1", freelancer_id="someone-else", amount=9, now=T0)


def test_no_bid_is_taken_after_seven_days_or_after_close() -> None:
    a = opened()
    with pytest.raises(errors.AuctionClosed):
        a.begin_bid(bid_id="b", proposal_id="p", freelancer_id="f", amount=3, now=T0 + timedelta(days=7))
    a.close(CloseReason.MANUAL, T0)
    with pytest.raises(errors.AuctionClosed):
        a.begin_bid(bid_id="b", proposal_id="p", freelancer_id="f", amount=3, now=T0)


def test_first_price_close_captures_the_top_four_at_their_bids_and_releases_the_rest() -> None:
    a = opened()
    for i, amount in enumerate([3, 8, 5, 9, 1, 7]):
        bid(a, f"p{i}", amount, T0 + timedelta(minutes=i))
    steps = a.close(CloseReason.EXPIRED, T0 + timedelta(days=7))
    captures = {s.proposal_id: s.amount for s in steps if s.action is StepAction.CAPTURE}
    releases = {s.proposal_id for s in steps if s.action is StepAction.RELEASE}
    assert captures == {"p3": 9, "p1": 8, "p5": 7, "p2": 5}
    assert releases == {"p0", "p4"}
    assert a.status is AuctionStatus.CLOSING
    for s in steps:
        a.settle(s.proposal_id, s.amount, T0 + timedelta(days=7))
    assert a.status is AuctionStatus.CLOSED
    settled = [f for f in a.facts if isinstance(f, ev.AuctionSettled)]
    assert settled == [ev.AuctionSettled("job-1", 29, 4, 2)]


def test_an_interaction_while_boosted_pays_even_when_outbid_later() -> None:
    a = opened()
    for i in range(4):
        bid(a, f"p{i}", 5, T0 + timedelta(minutes=i))
    assert a.interact("p3", Interaction.SHORTLISTED, T0 + timedelta(hours=1)) is True
    for i in range(4, 8):
        bid(a, f"p{i}", 10, T0 + timedelta(hours=2, minutes=i))
    assert "p3" not in boosted(a)
    steps = a.close(CloseReason.FIRST_HIRE, T0 + timedelta(days=1))
    assert {s.proposal_id for s in steps if s.action is StepAction.CAPTURE} == {"p3", "p4", "p5", "p6", "p7"}
    assert {s.proposal_id for s in steps if s.action is StepAction.RELEASE} == {"p0", "p1", "p2"}


def test_an_outbid_proposal_with_no_interaction_pays_nothing() -> None:
    a = opened()
    bid(a, "p0", 2, T0)
    assert a.interact("p0", Interaction.OPENED, T0) is False  # opening is not a counted action
    for i in range(1, 5):
        bid(a, f"p{i}", 3, T0 + timedelta(minutes=i))
    assert a.interact("p0", Interaction.MESSAGED, T0 + timedelta(hours=1)) is False  # not boosted any more
    steps = a.close(CloseReason.MANUAL, T0 + timedelta(days=1))
    assert [s.action for s in steps if s.proposal_id == "p0"] == [StepAction.RELEASE]


@pytest.mark.parametrize("kind, times", [(Interaction.OPENED, 3), (Interaction.VIEWED, 5)])
def test_opened_three_times_or_seen_five_times_ends_the_boost_pays_and_moves_the_slot(
        kind: Interaction, times: int) -> None:
    a = opened()
    for i in range(5):
        bid(a, f"p{i}", 10 - i, T0 + timedelta(minutes=i))
    assert boosted(a) == ["p0", "p1", "p2", "p3"]
    for n in range(times - 1):
        a.interact("p0", kind, T0 + timedelta(hours=n))
    assert "p0" in boosted(a)
    a.interact("p0", kind, T0 + timedelta(hours=times))
    assert boosted(a) == ["p1", "p2", "p3", "p4"]
    steps = a.close(CloseReason.EXPIRED, T0 + timedelta(days=7))
    assert {s.proposal_id for s in steps if s.action is StepAction.CAPTURE} == {"p0", "p1", "p2", "p3", "p4"}


def test_views_of_a_committed_bid_do_not_end_its_boost() -> None:
    a = opened()
    bid(a, "p0", 4, T0)
    a.interact("p0", Interaction.MESSAGED, T0)
    for _ in range(6):
        a.interact("p0", Interaction.VIEWED, T0)
    assert boosted(a) == ["p0"]


def test_a_cancelled_job_releases_every_hold_even_committed_ones() -> None:
    a = opened()
    bid(a, "p0", 4, T0)
    a.interact("p0", Interaction.OFFER_SENT, T0)
    bid(a, "p1", 2, T0)
    steps = a.close(CloseReason.JOB_CANCELLED, T0 + timedelta(days=1))
    assert {s.action for s in steps} == {StepAction.RELEASE} and len(steps) == 2


def test_closing_twice_changes_nothing() -> None:
    a = opened()
    bid(a, "p0", 4, T0)
    assert len(a.close(CloseReason.MANUAL, T0)) == 1
    assert a.close(CloseReason.EXPIRED, T0) == []
    assert a.close_reason is CloseReason.MANUAL


def test_a_hold_confirmed_after_close_is_released() -> None:
    a = opened()
    a.begin_bid(bid_id="b1", proposal_id="late", freelancer_id="f", amount=6, now=T0)
    assert a.close(CloseReason.MANUAL, T0) == []
    assert a.status is AuctionStatus.CLOSING  # waits for the pending hold
    step = a.confirm_bid("late", "h-late", T0)
    assert step is not None and step.action is StepAction.RELEASE and step.hold_id == "h-late"
    a.settle("late", 0, T0)
    assert a.status is AuctionStatus.CLOSED and a.bids["late"].state is BidState.RELEASED


def test_a_placebo_auction_holds_nothing_boosts_nothing_and_closes_at_once() -> None:
    a = opened(placebo=True)
    bid(a, "p0", 9, T0)
    assert boosted(a) == []
    assert a.interact("p0", Interaction.MESSAGED, T0) is False
    assert a.close(CloseReason.EXPIRED, T0 + timedelta(days=7)) == []
    assert a.status is AuctionStatus.CLOSED and a.bids["p0"].state is BidState.RELEASED


def test_placebo_selection_is_a_stable_hash_near_the_configured_share() -> None:
    jobs = [f"job-{i}" for i in range(20_000)]
    chosen = [j for j in jobs if is_placebo(j, 0.02)]
    assert 0.015 < len(chosen) / len(jobs) < 0.025
    assert chosen == [j for j in jobs if is_placebo(j, 0.02)]  # every replica agrees
    assert not any(is_placebo(j, 0.0) for j in jobs[:500]) and all(is_placebo(j, 1.0) for j in jobs[:500])
    assert set(chosen) <= {j for j in jobs if is_placebo(j, 0.05)}  # a larger share keeps the smaller's jobs


def test_a_late_job_posted_retimes_an_auction_its_first_bid_opened() -> None:
    a = Auction.open("job-1", opened_at=T0 + timedelta(hours=2), length=timedelta(days=7), placebo=False)
    assert a.posted(T0, timedelta(days=7)) is True
    assert (a.opened_at, a.closes_at) == (T0, T0 + timedelta(days=7))
    assert a.posted(T0, timedelta(days=7)) is False
    a.close(CloseReason.MANUAL, T0)
    assert a.posted(T0 - timedelta(days=1), timedelta(days=7)) is False
