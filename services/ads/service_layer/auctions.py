"""Auction use cases: one function per command, over a unit of work; the ledger through its port.

PlaceBid is three steps so a crash anywhere neither leaks nor double-holds Connects:
1. one transaction records the bid (or raise) as PENDING with the request, the ledger request id derived
   from the bid id (`ads:bid:<bid_id>:hold` / `:raise:<n>`);
2. the ledger call, outside any transaction;
3. one transaction confirms (HELD, ranked, BidPlaced/BidRaised) or, on a refusal, forgets the bid.
A retry of the request, or `resolve_pending_bids` after a crash, replays step 2 with the same ledger
request id (the ledger answers it once) and finishes step 3.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from services.ads.adapters.events import to_event
from services.ads.adapters.topics import ADS_EVENTS
from services.ads.domain import errors
from services.ads.domain.auction import (
    Auction,
    AuctionStatus,
    Bid,
    BidState,
    CloseReason,
    Interaction,
    hold_reference,
    hold_request_id,
    is_placebo,
    raise_request_id,
)
from services.ads.domain.events import Fact
from services.ads.service_layer import views
from services.ads.service_layer.metrics import Metrics, NoMetrics
from services.ads.service_layer.unit_of_work import AdsUnitOfWork, RequestInProgress, StoredRequest
from services.connects.client import AbstractConnectsClient
from services.kit.errors import AlreadyExists, DomainError, InvalidArgument, Unavailable, require

log = logging.getLogger(__name__)
UowFactory = Callable[[], AdsUnitOfWork]


@dataclass(frozen=True)
class AuctionSettings:
    length: timedelta = timedelta(days=7)
    hold_ttl: timedelta = timedelta(days=30)
    placebo_share: float = 0.02
    pending_grace: timedelta = timedelta(seconds=30)  # a pending bid older than this is resolved by the worker


def new_id() -> str:
    return uuid.uuid4().hex


def publish_facts(uow: AdsUnitOfWork, facts: list[Fact], now: datetime, causation_id: str | None = None) -> None:
    """Queue the facts in the outbox (same transaction) and forget them."""
    for fact in facts:
        uow.publish(ADS_EVENTS, to_event(fact, now, causation_id))
    facts.clear()


def stored_request(uow: AdsUnitOfWork, request_id: str, fp: str) -> StoredRequest | None:
    """The request as first recorded, if this request_id was seen; REQUEST_ID_REUSED if the request differs."""
    return _same_request(uow.requests.get(request_id), request_id, fp)


def _same_request(stored: StoredRequest | None, request_id: str, fp: str) -> StoredRequest | None:
    if stored is not None and stored.fingerprint != fp:
        raise AlreadyExists("REQUEST_ID_REUSED", f"request_id {request_id} was used for a different request",
                            field="request_id")
    return stored


def _replay(uow: AdsUnitOfWork, request_id: str, fp: str) -> str | None:
    """The stored answer of a repeated request ("" while it waits for the ledger; None if new)."""
    stored = stored_request(uow, request_id, fp)
    if stored is None:
        return None
    return stored.answer if stored.done else ""


def require_id(value: str, field: str) -> None:
    """An ads id or request id: present, at most 128 characters, printable (what the ledger accepts)."""
    require(bool(value), field, "is required")
    require(len(value) <= 128, field, "is longer than 128 characters")
    # the ledger refuses ids and references with control characters: refuse them before anything is recorded
    require(value.isprintable(), field, "contains control characters")


@dataclass(frozen=True)
class PlaceBid:
    request_id: str
    job_id: str
    proposal_id: str
    freelancer_id: str
    bid_connects: int

    def validate(self) -> None:
        for field in ("request_id", "job_id", "proposal_id", "freelancer_id"):
            require_id(getattr(self, field), field)


def _open_new(job_id: str, opened_at: datetime, settings: AuctionSettings, metrics: Metrics) -> Auction:
    auction = Auction.open(job_id, opened_at=opened_at, length=settings.length,
                           placebo=is_placebo(job_id, settings.placebo_share))
    metrics.auction_opened(auction.placebo)
    return auction


def place_bid(uow_factory: UowFactory, connects: AbstractConnectsClient, cmd: PlaceBid, now: datetime,
              settings: AuctionSettings, metrics: Metrics | None = None) -> views.PlaceBidResult:
    """Hold the bid (or the raise) in the ledger and rank it; replays return the first answer."""
    metrics = metrics or NoMetrics()
    cmd.validate()
    fp = views.fingerprint("PlaceBid", cmd.job_id, cmd.proposal_id, cmd.freelancer_id, cmd.bid_connects)
    for attempt in range(3):
        try:
            result = _begin_bid(uow_factory, cmd, fp, now, settings, metrics)
            break
        except RequestInProgress:
            if attempt == 2:
                raise
    if isinstance(result, views.PlaceBidResult):
        return result
    return finish_bid(uow_factory, connects, cmd.job_id, cmd.proposal_id, now, settings, metrics,
                      request_id=cmd.request_id, pending=result)


@dataclass(frozen=True)
class PendingBid:
    """What the ledger call of a pending bid needs (read in the transaction that recorded it)."""

    ledger_id: str
    is_new: bool
    bid_id: str
    freelancer_id: str
    amount: int
    hold_id: str
    new_amount: int
    raises: int
    request_id: str

    @classmethod
    def of(cls, bid: Bid, ledger_id: str) -> PendingBid:
        return cls(ledger_id, bid.state is BidState.PENDING, bid.bid_id, bid.freelancer_id, bid.amount,
                   bid.hold_id, bid.pending_amount, bid.raises, bid.request_id)


def _begin_bid(uow_factory: UowFactory, cmd: PlaceBid, fp: str, now: datetime, settings: AuctionSettings,
               metrics: Metrics) -> views.PlaceBidResult | PendingBid | None:
    with uow_factory() as uow:
        # The auction's locked read travels with the claim (one round trip on PostgreSQL); the claim is one
        # statement that records a new request (PENDING) or finds the first one: no read before the write.
        uow.auctions.prefetch(cmd.job_id)
        stored = _same_request(uow.requests.claim(cmd.request_id, "PlaceBid", fp, now), cmd.request_id, fp)
        if stored is not None:
            if stored.done and stored.answer:
                return views.PlaceBidResult.from_json(stored.answer)
            return None  # waiting for the ledger: resume it
        auction = uow.auctions.get(cmd.job_id)
        created = auction is None
        if auction is None:
            auction = _open_new(cmd.job_id, now, settings, metrics)
        try:
            bid, raised = auction.begin_bid(bid_id=new_id(), proposal_id=cmd.proposal_id,
                                            freelancer_id=cmd.freelancer_id, amount=cmd.bid_connects, now=now,
                                            request_id=cmd.request_id)
        except DomainError as refusal:
            metrics.bid_refused(refusal.reason)
            raise
        result = None
        if auction.placebo:  # nothing to hold: the bid is recorded and ranked at once
            auction.confirm_bid(cmd.proposal_id, "", now)
            result = views.PlaceBidResult(views.bid_view(auction, bid), raised)
            metrics.bid_placed(raised, True)
        if created:
            uow.auctions.add(auction)
        else:
            uow.auctions.save(auction)
        if result is not None:
            uow.requests.complete(cmd.request_id, result.to_json())
        publish_facts(uow, auction.facts, now, cmd.request_id)
        uow.commit()
    if result is not None:
        return result
    ledger_id = bid.pending_request_id
    assert ledger_id is not None
    return PendingBid.of(bid, ledger_id)


def finish_bid(uow_factory: UowFactory, connects: AbstractConnectsClient, job_id: str, proposal_id: str,
               now: datetime, settings: AuctionSettings, metrics: Metrics | None = None, *,
               request_id: str | None = None, pending: PendingBid | None = None) -> views.PlaceBidResult:
    """Ask the ledger for a pending bid's hold (or raise) and record its answer (safe to repeat)."""
    metrics = metrics or NoMetrics()
    if pending is None:
        with uow_factory() as uow:
            auction = uow.auctions.get(job_id, lock=False)
            bid = auction.bids.get(proposal_id) if auction else None
            if auction is None or bid is None:
                raise Unavailable("BID_NOT_FOUND", f"the pending bid of {proposal_id} is gone; retry")
            waiting = bid.pending_request_id
            if waiting is None:
                return views.PlaceBidResult(views.bid_view(auction, bid), bid.raises > 0)
            pending = PendingBid.of(bid, waiting)
    ledger_id, is_new, bid_id, freelancer_id = pending.ledger_id, pending.is_new, pending.bid_id, pending.freelancer_id
    amount, hold_id, new_amount, raises, bid_request = (pending.amount, pending.hold_id, pending.new_amount,
                                                        pending.raises, pending.request_id)
    try:
        if is_new:
            move = connects.hold(hold_request_id(bid_id), freelancer_id, amount, "BOOST",
                                 hold_reference(job_id, proposal_id), settings.hold_ttl)
        else:
            move = connects.increase_hold(raise_request_id(bid_id, raises), hold_id, new_amount)
    except Unavailable as exc:
        metrics.connects_error("hold" if is_new else "increase_hold", exc.reason)
        raise
    except DomainError as refusal:
        metrics.bid_refused(refusal.reason)
        with uow_factory() as uow:
            auction = uow.auctions.get(job_id)
            assert auction is not None
            bid = auction.bids.get(proposal_id)
            if bid is not None and bid.pending_request_id == ledger_id:
                auction.abandon_bid(proposal_id, now)
                uow.auctions.save(auction)
                if bid_request:
                    uow.requests.forget(bid_request)
                uow.commit()
        raise
    with uow_factory() as uow:
        auction = uow.auctions.get(job_id)
        assert auction is not None
        bid = auction.bids[proposal_id]
        if bid.pending_request_id == ledger_id:
            step = auction.confirm_bid(proposal_id, move.hold_id, now)
            if step is not None:
                uow.steps.add([step], now)
            uow.auctions.save(auction)
            result = views.PlaceBidResult(views.bid_view(auction, bid), not is_new)
            if bid_request:
                uow.requests.complete(bid_request, result.to_json())
            publish_facts(uow, auction.facts, now, request_id)
            metrics.bid_placed(not is_new, False)
        else:
            result = views.PlaceBidResult(views.bid_view(auction, bid), not is_new)
        uow.commit()
    return result


def resolve_pending_bids(uow_factory: UowFactory, connects: AbstractConnectsClient, now: datetime,
                         settings: AuctionSettings, metrics: Metrics | None = None, limit: int = 50) -> int:
    """Finish bids left waiting for the ledger (a crash, a client that never retried). Returns how many."""
    with uow_factory() as uow:
        pending = uow.auctions.pending_bids(now - settings.pending_grace, limit)
    done = 0
    for job_id, proposal_id in pending:
        try:
            finish_bid(uow_factory, connects, job_id, proposal_id, now, settings, metrics)
            done += 1
        except Unavailable:
            raise
        except DomainError as refusal:  # the ledger said no: the bid was forgotten
            log.info("pending bid of %s on %s refused by the ledger: %s", proposal_id, job_id, refusal.reason)
            done += 1
    return done


def get_auction(uow_factory: UowFactory, job_id: str) -> views.AuctionView:
    require_id(job_id, "job_id")
    with uow_factory() as uow:
        auction = uow.auctions.get(job_id, lock=False)
    if auction is None:
        raise errors.AuctionNotFound(job_id)
    return views.auction_view(auction)


@dataclass(frozen=True)
class RecordInteraction:
    request_id: str
    job_id: str
    proposal_id: str
    kind: Interaction


def interact(uow: AdsUnitOfWork, job_id: str, proposal_id: str, kind: Interaction, now: datetime,
             causation_id: str | None = None) -> views.InteractionResult:
    """Apply one client action inside an open unit of work (the RPC and the marketplace consumer share it)."""
    auction = uow.auctions.get(job_id)
    if auction is None or proposal_id not in auction.bids:
        return views.InteractionResult(False, None)
    counted = auction.interact(proposal_id, kind, now)
    uow.auctions.save(auction)
    publish_facts(uow, auction.facts, now, causation_id)
    return views.InteractionResult(counted, views.bid_view(auction, auction.bids[proposal_id]))


def record_interaction(uow_factory: UowFactory, cmd: RecordInteraction, now: datetime) -> views.InteractionResult:
    require_id(cmd.request_id, "request_id")
    require_id(cmd.job_id, "job_id")
    require_id(cmd.proposal_id, "proposal_id")
    fp = views.fingerprint("RecordInteraction", cmd.job_id, cmd.proposal_id, cmd.kind.value)
    with uow_factory() as uow:
        answer = _replay(uow, cmd.request_id, fp)
        if answer:
            return views.InteractionResult.from_json(answer)
        result = interact(uow, cmd.job_id, cmd.proposal_id, cmd.kind, now, cmd.request_id)
        uow.requests.add(cmd.request_id, "RecordInteraction", fp, now, result.to_json())
        uow.commit()
    return result


def close(uow: AdsUnitOfWork, job_id: str, reason: CloseReason, now: datetime, settings: AuctionSettings,
          metrics: Metrics, *, create: bool, causation_id: str | None = None) -> Auction | None:
    """Close a job's auction inside an open unit of work and persist its settlement steps.

    `create`: a job ads never saw gets a closed, empty auction (so a late first bid is refused).
    """
    auction = uow.auctions.get(job_id)
    if auction is None:
        if not create:
            return None
        auction = _open_new(job_id, now, settings, metrics)
        auction.close(reason, now)
        uow.auctions.add(auction)
    elif auction.status is AuctionStatus.OPEN:
        uow.steps.add(auction.close(reason, now), now)
        uow.auctions.save(auction)
        metrics.auction_closed(reason.value)
    elif auction.status is AuctionStatus.CLOSING and reason.releases_all:
        converted = uow.steps.release_unsent_captures(job_id)
        auction.cancel_captures(reason)
        uow.auctions.save(auction)
        log.info("job %s cancelled while settling: %d captures turned into releases", job_id, converted)
    publish_facts(uow, auction.facts, now, causation_id)
    return auction


def close_auction(uow_factory: UowFactory, request_id: str, job_id: str, reason: CloseReason | None,
                  now: datetime, settings: AuctionSettings, metrics: Metrics | None = None) -> views.AuctionView:
    require_id(request_id, "request_id")
    require_id(job_id, "job_id")
    if reason is None:
        raise InvalidArgument("INVALID_FIELD", "reason: is required", field="reason")
    fp = views.fingerprint("CloseAuction", job_id, reason.value)
    with uow_factory() as uow:
        answer = _replay(uow, request_id, fp)
        if answer is None:
            auction = close(uow, job_id, reason, now, settings, metrics or NoMetrics(), create=False,
                            causation_id=request_id)
            if auction is None:
                raise errors.AuctionNotFound(job_id)
            uow.requests.add(request_id, "CloseAuction", fp, now, "{}")
            uow.commit()
            return views.auction_view(auction)
    return get_auction(uow_factory, job_id)  # a repeated close returns the auction as it is now


def open_auction(uow: AdsUnitOfWork, job_id: str, posted_at: datetime, now: datetime, settings: AuctionSettings,
                 metrics: Metrics, causation_id: str | None = None) -> bool:
    """JobPosted: open the job's auction (closing `length` after posting); an auction a first bid opened
    before the event arrived is re-timed to the posting. False if nothing was opened."""
    existing = uow.auctions.get(job_id)
    if existing is not None:
        if existing.posted(posted_at, settings.length):
            uow.auctions.save(existing)
        return False
    auction = _open_new(job_id, posted_at, settings, metrics)
    uow.auctions.add(auction)
    publish_facts(uow, auction.facts, now, causation_id)
    return True


def close_due_auctions(uow_factory: UowFactory, now: datetime, settings: AuctionSettings,
                       metrics: Metrics | None = None, limit: int = 100) -> int:
    """Close the auctions whose 7 days are up (claimed, so two replicas never close one twice)."""
    with uow_factory() as uow:
        due = uow.auctions.claim_due(now, limit)
        for job_id in due:
            close(uow, job_id, CloseReason.EXPIRED, now, settings, metrics or NoMetrics(), create=False)
        uow.commit()
    return len(due)
