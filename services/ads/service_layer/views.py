"""What the use cases answer: plain snapshots of auctions, bids and badges (stored as JSON for replays)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from services.ads.domain.auction import BOOSTED_SLOTS, Auction, Bid
from services.ads.domain.badge import Badge, charge_interval


def fingerprint(method: str, *fields: object) -> str:
    """What makes two requests with one request_id the same request."""
    return hashlib.sha256(json.dumps([method, *fields], default=str).encode()).hexdigest()


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


@dataclass(frozen=True)
class BidView:
    job_id: str
    proposal_id: str
    freelancer_id: str
    bid_connects: int
    rank: int
    boosted: bool
    interacted_while_boosted: bool
    state: str
    hold_id: str
    placed_at: datetime
    updated_at: datetime | None

    def to_dict(self) -> dict[str, Any]:
        # the fields one by one: dataclasses.asdict deep-copies every value (str, int, datetime here: no need)
        return {**{f.name: getattr(self, f.name) for f in _BID_FIELDS}, "placed_at": _iso(self.placed_at),
                "updated_at": _iso(self.updated_at)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BidView:
        placed = _dt(data["placed_at"])
        assert placed is not None
        return cls(**{**data, "placed_at": placed, "updated_at": _dt(data["updated_at"])})


_BID_FIELDS = dataclasses.fields(BidView)


def bid_view(auction: Auction, bid: Bid) -> BidView:
    boosted = {b.bid_id for b in auction.boosted()}
    return BidView(bid.job_id, bid.proposal_id, bid.freelancer_id, bid.amount, auction.rank_of(bid.proposal_id),
                   bid.bid_id in boosted and auction.status.value == "OPEN", bid.pays, bid.state.value,
                   bid.hold_id, bid.placed_at, bid.updated_at)


@dataclass(frozen=True)
class AuctionView:
    job_id: str
    status: str
    placebo: bool
    boosted_slots: int
    bids: tuple[BidView, ...]
    opened_at: datetime
    closes_at: datetime
    closed_at: datetime | None
    close_reason: str | None


def auction_view(auction: Auction) -> AuctionView:
    return AuctionView(auction.job_id, auction.status.value, auction.placebo, 0 if auction.placebo else BOOSTED_SLOTS,
                       tuple(bid_view(auction, b) for b in auction.ranking()), auction.opened_at, auction.closes_at,
                       auction.closed_at, auction.close_reason.value if auction.close_reason else None)


@dataclass(frozen=True)
class PlaceBidResult:
    bid: BidView
    raised: bool

    def to_json(self) -> str:
        return json.dumps({"bid": self.bid.to_dict(), "raised": self.raised})

    @classmethod
    def from_json(cls, text: str) -> PlaceBidResult:
        data = json.loads(text)
        return cls(BidView.from_dict(data["bid"]), data["raised"])


@dataclass(frozen=True)
class InteractionResult:
    counted: bool
    bid: BidView | None

    def to_json(self) -> str:
        return json.dumps({"counted": self.counted, "bid": self.bid.to_dict() if self.bid else None})

    @classmethod
    def from_json(cls, text: str) -> InteractionResult:
        data = json.loads(text)
        return cls(data["counted"], BidView.from_dict(data["bid"]) if data["bid"] else None)


@dataclass(frozen=True)
class BadgeView:
    freelancer_id: str
    state: str
    category: str
    weekly_max_connects: int
    current_weekly_price_connects: int
    charge_interval: timedelta
    next_charge_at: datetime | None
    charged_this_week_connects: int
    started_at: datetime | None
    stopped_at: datetime | None
    stop_reason: str | None


def badge_view(badge: Badge, current_price: int) -> BadgeView:
    price = badge.weekly_price if badge.active else current_price
    return BadgeView(badge.freelancer_id, badge.state.value, badge.category, badge.weekly_max, price,
                     charge_interval(price), badge.next_charge_at if badge.active else None,
                     badge.charged_this_week if badge.active else 0, badge.started_at, badge.stopped_at,
                     badge.stop_reason.value if badge.stop_reason else None)
