"""Ads' facts as ads.events.v1 payloads in the kit's Event envelope."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from adsmon.ads.v1 import events_pb2
from adsmon.events.v1.event_pb2 import Event
from google.protobuf import duration_pb2, timestamp_pb2
from google.protobuf.message import Message

from services.ads.domain import events as ev
from services.kit.kafka import make_event

PRODUCER = "ads"


def timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value.astimezone(UTC))
    return ts


def duration(value: timedelta) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromTimedelta(value)
    return d


def _payload(fact: ev.Fact) -> tuple[Message, str]:
    match fact:
        case ev.AuctionOpened():
            return events_pb2.AuctionOpened(job_id=fact.job_id, placebo=fact.placebo,
                                            closes_at=timestamp(fact.closes_at)), fact.job_id
        case ev.BidPlaced():
            return events_pb2.BidPlaced(job_id=fact.job_id, proposal_id=fact.proposal_id,
                                        freelancer_id=fact.freelancer_id, bid_connects=fact.bid_connects,
                                        hold_id=fact.hold_id, rank=fact.rank, placebo=fact.placebo), fact.job_id
        case ev.BidRaised():
            return events_pb2.BidRaised(job_id=fact.job_id, proposal_id=fact.proposal_id,
                                        freelancer_id=fact.freelancer_id,
                                        previous_bid_connects=fact.previous_bid_connects,
                                        bid_connects=fact.bid_connects, hold_id=fact.hold_id,
                                        rank=fact.rank), fact.job_id
        case ev.BidInteractionCounted():
            return events_pb2.BidInteractionCounted(
                job_id=fact.job_id, proposal_id=fact.proposal_id, freelancer_id=fact.freelancer_id,
                kind=f"INTERACTION_KIND_{fact.kind}",
                bid_connects=fact.bid_connects), fact.job_id
        case ev.BidUnboosted():
            return events_pb2.BidUnboosted(job_id=fact.job_id, proposal_id=fact.proposal_id,
                                           freelancer_id=fact.freelancer_id), fact.job_id
        case ev.AuctionClosed():
            return events_pb2.AuctionClosed(
                job_id=fact.job_id, reason=f"AUCTION_CLOSE_REASON_{fact.reason}",
                placebo=fact.placebo, charged_proposal_ids=fact.charged_proposal_ids,
                released_proposal_ids=fact.released_proposal_ids), fact.job_id
        case ev.BidSettled():
            return events_pb2.BidSettled(job_id=fact.job_id, proposal_id=fact.proposal_id,
                                         freelancer_id=fact.freelancer_id,
                                         state=f"BID_STATE_{fact.state}",
                                         charged_connects=fact.charged_connects, hold_id=fact.hold_id), fact.job_id
        case ev.AuctionSettled():
            return events_pb2.AuctionSettled(job_id=fact.job_id, charged_connects=fact.charged_connects,
                                             charged_bids=fact.charged_bids,
                                             released_bids=fact.released_bids), fact.job_id
        case ev.BadgeStarted():
            return events_pb2.BadgeStarted(freelancer_id=fact.freelancer_id,
                                           weekly_max_connects=fact.weekly_max_connects,
                                           weekly_price_connects=fact.weekly_price_connects,
                                           next_charge_at=timestamp(fact.next_charge_at)), fact.freelancer_id
        case ev.BadgeStopped():
            return events_pb2.BadgeStopped(
                freelancer_id=fact.freelancer_id,
                reason=f"BADGE_STOP_REASON_{fact.reason}",
                weekly_price_connects=fact.weekly_price_connects), fact.freelancer_id
        case ev.BadgeCharged():
            msg = events_pb2.BadgeCharged(freelancer_id=fact.freelancer_id, charged_connects=fact.charged_connects,
                                          transaction_id=fact.transaction_id,
                                          charged_this_week_connects=fact.charged_this_week_connects,
                                          weekly_price_connects=fact.weekly_price_connects)
            if fact.next_charge_at:
                msg.next_charge_at.CopyFrom(timestamp(fact.next_charge_at))
            return msg, fact.freelancer_id
        case ev.BadgePriceChanged():
            return events_pb2.BadgePriceChanged(previous_weekly_price_connects=fact.previous_weekly_price_connects,
                                                weekly_price_connects=fact.weekly_price_connects,
                                                charge_interval=duration(fact.charge_interval),
                                                category=fact.category), fact.category
    raise TypeError(f"no payload for {type(fact).__name__}")


def to_event(fact: ev.Fact, occurred_at: datetime, causation_id: str | None = None) -> Event:
    payload, key = _payload(fact)
    return make_event(payload, key, PRODUCER, causation_id=causation_id, occurred_at=occurred_at)
