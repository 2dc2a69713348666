"""The boost auction of one job: bids, ranking, boosted slots, interactions, close and settlement.

Rules (DOMAIN.md "Boosted proposals"):
- bids rank by amount, ties to the earlier bid (first placed; a raise keeps the original time);
- the top BOOSTED_SLOTS ranked bids hold the boosted slots, skipping bids whose boost ended by exposure;
- a counted client action (message, shortlist, offer, archive, decline) on a boosted bid commits it to pay
  its full bid at close, even if outbid later; it keeps competing for a slot like any other bid;
- a boosted bid opened OPENS_TO_END times or viewed VIEWS_TO_END times with no counted action loses its
  boost and pays its bid *(ours)*; its slot moves to the next bid;
- at close (first-price): the boosted bids and every committed bid are captured at their bid, the others
  released; a cancelled or removed job releases everything;
- a placebo auction holds nothing and boosts nothing: bids are recorded, the ranking stays organic.

A bid becomes part of the auction only once the ledger confirmed its hold (`confirm_bid`): until then it
is PENDING and neither ranked nor boosted, so a crash between the hold and its record can neither show
nor charge a bid nobody paid for.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from services.ads.domain import errors
from services.ads.domain import events as ev

BOOSTED_SLOTS = 4
MIN_BID_CONNECTS = 1
MAX_BID_CONNECTS = 10_000
OPENS_TO_END = 3
VIEWS_TO_END = 5


class AuctionStatus(StrEnum):
    OPEN = "OPEN"
    CLOSING = "CLOSING"
    CLOSED = "CLOSED"


class CloseReason(StrEnum):
    EXPIRED = "EXPIRED"
    FIRST_HIRE = "FIRST_HIRE"
    JOB_CANCELLED = "JOB_CANCELLED"
    JOB_REMOVED = "JOB_REMOVED"
    MANUAL = "MANUAL"

    @property
    def releases_all(self) -> bool:
        return self in (CloseReason.JOB_CANCELLED, CloseReason.JOB_REMOVED)


class BidState(StrEnum):
    PENDING = "PENDING"  # hold requested from the ledger, not confirmed yet
    HELD = "HELD"
    CHARGED = "CHARGED"
    RELEASED = "RELEASED"


class Interaction(StrEnum):
    OPENED = "OPENED"
    MESSAGED = "MESSAGED"
    SHORTLISTED = "SHORTLISTED"
    OFFER_SENT = "OFFER_SENT"
    ARCHIVED = "ARCHIVED"
    DECLINED = "DECLINED"
    VIEWED = "VIEWED"


COUNTED_INTERACTIONS = frozenset({Interaction.MESSAGED, Interaction.SHORTLISTED, Interaction.OFFER_SENT,
                                  Interaction.ARCHIVED, Interaction.DECLINED})


class StepAction(StrEnum):
    CAPTURE = "CAPTURE"
    RELEASE = "RELEASE"


def hold_request_id(bid_id: str) -> str:
    return f"ads:bid:{bid_id}:hold"


def raise_request_id(bid_id: str, n: int) -> str:
    return f"ads:bid:{bid_id}:raise:{n}"


def step_request_id(bid_id: str, action: StepAction) -> str:
    return f"ads:bid:{bid_id}:{action.value.lower()}"


def hold_reference(job_id: str, proposal_id: str) -> str:
    """The ledger reference of a boost hold: connects returns its capture when the job is cancelled."""
    return f"job:{job_id}/proposal:{proposal_id}/boost"


@dataclass
class Bid:
    bid_id: str
    job_id: str
    proposal_id: str
    freelancer_id: str
    amount: int  # the confirmed (held) bid; for a PENDING bid, the amount being held
    placed_at: datetime
    seq: int  # tie-break among bids placed at the same instant
    state: BidState = BidState.PENDING
    hold_id: str = ""
    pending_amount: int = 0  # a raise waiting for the ledger: the new total
    raises: int = 0  # raises requested so far (numbers each raise's ledger request id)
    committed: bool = False  # a counted interaction while boosted: pays at close
    exhausted: bool = False  # opened/viewed too often without action: boost ended, pays at close
    opens: int = 0
    views: int = 0
    updated_at: datetime | None = None
    request_id: str = ""  # the PlaceBid request waiting for the ledger's answer, if any

    @property
    def ranked(self) -> bool:
        return self.state is not BidState.PENDING

    @property
    def pays(self) -> bool:
        return self.committed or self.exhausted

    @property
    def pending_request_id(self) -> str | None:
        """The ledger request still waiting for an answer, if any."""
        if self.state is BidState.PENDING:
            return hold_request_id(self.bid_id)
        if self.pending_amount:
            return raise_request_id(self.bid_id, self.raises)
        return None


@dataclass(frozen=True)
class SettlementStep:
    """One capture or release the ledger must confirm; persisted and retried until it does."""

    job_id: str
    bid_id: str
    proposal_id: str
    freelancer_id: str
    hold_id: str
    action: StepAction
    amount: int  # captured Connects (0 for a release)

    @property
    def request_id(self) -> str:
        return step_request_id(self.bid_id, self.action)


@dataclass
class Auction:
    job_id: str
    placebo: bool
    opened_at: datetime
    closes_at: datetime
    status: AuctionStatus = AuctionStatus.OPEN
    closed_at: datetime | None = None
    close_reason: CloseReason | None = None
    bids: dict[str, Bid] = field(default_factory=dict)  # by proposal_id
    facts: list[ev.Fact] = field(default_factory=list)

    @classmethod
    def open(cls, job_id: str, *, opened_at: datetime, length: timedelta, placebo: bool) -> Auction:
        auction = cls(job_id=job_id, placebo=placebo, opened_at=opened_at, closes_at=opened_at + length)
        auction.facts.append(ev.AuctionOpened(job_id, placebo, auction.closes_at))
        return auction

    def posted(self, posted_at: datetime, length: timedelta) -> bool:
        """JobPosted arrived for an auction its first bid opened: it runs from the posting time. False if it
        already did, or is no longer open."""
        if self.status is not AuctionStatus.OPEN or self.opened_at == posted_at:
            return False
        self.opened_at, self.closes_at = posted_at, posted_at + length
        return True

    # -- reading ---------------------------------------------------------------------------------

    def ranking(self) -> list[Bid]:
        """Confirmed bids, highest first, ties to the earlier bid."""
        return sorted((b for b in self.bids.values() if b.ranked), key=lambda b: (-b.amount, b.placed_at, b.seq))

    def boosted(self) -> list[Bid]:
        """The bids in the boosted slots (none in a placebo auction)."""
        if self.placebo:
            return []
        return [b for b in self.ranking() if not b.exhausted][:BOOSTED_SLOTS]

    def rank_of(self, proposal_id: str) -> int:
        for i, bid in enumerate(self.ranking(), start=1):
            if bid.proposal_id == proposal_id:
                return i
        return 0

    def is_open(self, now: datetime) -> bool:
        return self.status is AuctionStatus.OPEN and now < self.closes_at

    def settled(self) -> bool:
        return all(b.state in (BidState.CHARGED, BidState.RELEASED) for b in self.bids.values())

    # -- bidding ---------------------------------------------------------------------------------

    def begin_bid(self, *, bid_id: str, proposal_id: str, freelancer_id: str, amount: int,
                  now: datetime, request_id: str = "") -> tuple[Bid, bool]:
        """Validate a bid or raise and record it as pending; returns (bid, raised).

        The caller then asks the ledger (hold or increase) with `bid.pending_request_id` and reports the
        answer through `confirm_bid` or `abandon_bid`.
        """
        if amount < MIN_BID_CONNECTS:
            raise errors.BidTooLow(amount, MIN_BID_CONNECTS)
        if amount > MAX_BID_CONNECTS:
            raise errors.BidTooHigh(amount, MAX_BID_CONNECTS)
        if not self.is_open(now):
            raise errors.AuctionClosed(self.job_id, "CLOSED" if self.status is AuctionStatus.OPEN
                                       else self.status.value)
        existing = self.bids.get(proposal_id)
        if existing is None:
            bid = Bid(bid_id=bid_id, job_id=self.job_id, proposal_id=proposal_id, freelancer_id=freelancer_id,
                      amount=amount, placed_at=now, seq=len(self.bids), updated_at=now, request_id=request_id)
            self.bids[proposal_id] = bid
            return bid, False
        if existing.freelancer_id != freelancer_id:
            raise errors.ProposalOwnerMismatch(proposal_id)
        if existing.pending_request_id is not None:
            raise errors.BidInProgress(proposal_id)
        if amount <= existing.amount:
            raise errors.BidTooLow(amount, existing.amount + 1)
        existing.raises += 1
        existing.pending_amount = amount
        existing.updated_at = now
        existing.request_id = request_id
        return existing, True

    def confirm_bid(self, proposal_id: str, hold_id: str, now: datetime) -> SettlementStep | None:
        """The ledger confirmed the pending hold (or raise): the bid ranks at its new amount.

        Returns a release step when the auction closed while the ledger was answering: that hold was
        never part of the auction and is given back.
        """
        bid = self.bids[proposal_id]
        was_boosted = self._boosted_ids()
        raised = bid.state is not BidState.PENDING
        previous = bid.amount
        if raised:
            if not bid.pending_amount:
                return None  # already confirmed (a replay)
            bid.amount, bid.pending_amount = bid.pending_amount, 0
        else:
            bid.state = BidState.HELD
        bid.hold_id = hold_id or bid.hold_id
        bid.updated_at = now
        bid.request_id = ""
        rank = self.rank_of(proposal_id)
        if raised:
            self.facts.append(ev.BidRaised(self.job_id, proposal_id, bid.freelancer_id, previous, bid.amount,
                                           bid.hold_id, rank))
        else:
            self.facts.append(ev.BidPlaced(self.job_id, proposal_id, bid.freelancer_id, bid.amount, bid.hold_id,
                                           rank, self.placebo))
        if self.status is not AuctionStatus.OPEN and not raised:
            return self._release_step(bid)
        self._note_unboosted(was_boosted)
        return None

    def abandon_bid(self, proposal_id: str, now: datetime) -> None:
        """The ledger refused the pending hold (or raise): nothing was held, the bid stays as it was."""
        bid = self.bids.get(proposal_id)
        if bid is None:
            return
        if bid.state is BidState.PENDING:
            del self.bids[proposal_id]
        else:
            bid.pending_amount = 0
            bid.updated_at = now
            bid.request_id = ""

    # -- client actions --------------------------------------------------------------------------

    def interact(self, proposal_id: str, kind: Interaction, now: datetime) -> bool:
        """Apply a client action; True if it counted while the bid was boosted (it pays at close)."""
        bid = self.bids.get(proposal_id)
        if bid is None or self.status is not AuctionStatus.OPEN or not bid.ranked:
            return False
        if bid.bid_id not in self._boosted_ids():
            return False
        if kind in COUNTED_INTERACTIONS:
            if not bid.committed:
                bid.committed = True
                bid.updated_at = now
                self.facts.append(ev.BidInteractionCounted(self.job_id, proposal_id, bid.freelancer_id, kind.value,
                                                           bid.amount))
            return True
        if kind is Interaction.OPENED:
            bid.opens += 1
        elif kind is Interaction.VIEWED:
            bid.views += 1
        if not bid.committed and (bid.opens >= OPENS_TO_END or bid.views >= VIEWS_TO_END):
            bid.exhausted = True
            bid.updated_at = now
            self.facts.append(ev.BidUnboosted(self.job_id, proposal_id, bid.freelancer_id))
        return False

    # -- close and settlement --------------------------------------------------------------------

    def close(self, reason: CloseReason, now: datetime) -> list[SettlementStep]:
        """Stop taking bids; the captures and releases the ledger must now confirm.

        Closing a closing or closed auction changes nothing (see `cancel_captures` for a job cancelled
        while its auction settles).
        """
        if self.status is not AuctionStatus.OPEN:
            return []
        self.status, self.closed_at, self.close_reason = AuctionStatus.CLOSING, now, reason
        held = [b for b in self.ranking() if b.state is BidState.HELD]
        if self.placebo:
            steps: list[SettlementStep] = []
            for bid in held:  # nothing was held in the ledger
                bid.state, bid.updated_at = BidState.RELEASED, now
            charged: list[Bid] = []
        else:
            boosted = self._boosted_ids()
            charged = [] if reason.releases_all else [b for b in held if b.bid_id in boosted or b.pays]
            charged_ids = {b.bid_id for b in charged}
            steps = [self._capture_step(b) if b.bid_id in charged_ids else self._release_step(b) for b in held]
        self.facts.append(ev.AuctionClosed(self.job_id, reason.value, self.placebo,
                                           tuple(b.proposal_id for b in charged),
                                           tuple(b.proposal_id for b in held if b not in charged)))
        self._finish_if_settled(now)
        return steps

    def cancel_captures(self, reason: CloseReason) -> None:
        """The job was cancelled or removed while the auction settles: captures not yet sent become releases
        (the caller rewrites those steps); captures already sent are returned by connects."""
        if reason.releases_all and self.status is AuctionStatus.CLOSING:
            self.close_reason = reason

    def settle(self, proposal_id: str, charged: int, now: datetime) -> None:
        """The ledger confirmed the bid's capture (`charged` Connects) or release (0)."""
        bid = self.bids[proposal_id]
        if bid.state in (BidState.CHARGED, BidState.RELEASED):
            return
        bid.state = BidState.CHARGED if charged else BidState.RELEASED
        bid.updated_at = now
        self.facts.append(ev.BidSettled(self.job_id, proposal_id, bid.freelancer_id, bid.state.value, charged,
                                        bid.hold_id))
        self._finish_if_settled(now)

    def _finish_if_settled(self, now: datetime) -> None:
        if self.status is AuctionStatus.CLOSING and self.settled():
            self.status = AuctionStatus.CLOSED
            charged = [b for b in self.bids.values() if b.state is BidState.CHARGED]
            self.facts.append(ev.AuctionSettled(self.job_id, sum(b.amount for b in charged), len(charged),
                                                len(self.bids) - len(charged)))

    def _capture_step(self, bid: Bid) -> SettlementStep:
        return SettlementStep(self.job_id, bid.bid_id, bid.proposal_id, bid.freelancer_id, bid.hold_id,
                              StepAction.CAPTURE, bid.amount)

    def _release_step(self, bid: Bid) -> SettlementStep:
        return SettlementStep(self.job_id, bid.bid_id, bid.proposal_id, bid.freelancer_id, bid.hold_id,
                              StepAction.RELEASE, 0)

    def _boosted_ids(self) -> set[str]:
        return {b.bid_id for b in self.boosted()}

    def _note_unboosted(self, before: set[str]) -> None:
        after = self._boosted_ids()
        for bid in self.ranking():
            if bid.bid_id in before and bid.bid_id not in after and not bid.pays:
                self.facts.append(ev.BidUnboosted(self.job_id, bid.proposal_id, bid.freelancer_id))


def is_placebo(job_id: str, share: float) -> bool:
    """Whether a job runs a placebo auction: a hash of its id, so every replica and every replay agrees."""
    point = int.from_bytes(hashlib.sha256(f"placebo:{job_id}".encode()).digest()[:8], "big")
    return point < int(share * 2**64)
