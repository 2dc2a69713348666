"""What happened in ads, as plain facts; adapters/events.py turns them into the ads.events.v1 payloads."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class AuctionOpened:
    job_id: str
    placebo: bool
    closes_at: datetime


@dataclass(frozen=True)
class BidPlaced:
    job_id: str
    proposal_id: str
    freelancer_id: str
    bid_connects: int
    hold_id: str
    rank: int
    placebo: bool


@dataclass(frozen=True)
class BidRaised:
    job_id: str
    proposal_id: str
    freelancer_id: str
    previous_bid_connects: int
    bid_connects: int
    hold_id: str
    rank: int


@dataclass(frozen=True)
class BidInteractionCounted:
    job_id: str
    proposal_id: str
    freelancer_id: str
    kind: str
    bid_connects: int


@dataclass(frozen=True)
class BidUnboosted:
    job_id: str
    proposal_id: str
    freelancer_id: str


@dataclass(frozen=True)
class AuctionClosed:
    job_id: str
    reason: str
    placebo: bool
    charged_proposal_ids: tuple[str, ...]
    released_proposal_ids: tuple[str, ...]


@dataclass(frozen=True)
class BidSettled:
    job_id: str
    proposal_id: str
    freelancer_id: str
    state: str  # CHARGED or RELEASED
    charged_connects: int
    hold_id: str


@dataclass(frozen=True)
class AuctionSettled:
    job_id: str
    charged_connects: int
    charged_bids: int
    released_bids: int


@dataclass(frozen=True)
class BadgeStarted:
    freelancer_id: str
    weekly_max_connects: int
    weekly_price_connects: int
    next_charge_at: datetime


@dataclass(frozen=True)
class BadgeStopped:
    freelancer_id: str
    reason: str
    weekly_price_connects: int


@dataclass(frozen=True)
class BadgeCharged:
    freelancer_id: str
    charged_connects: int
    transaction_id: str
    charged_this_week_connects: int
    weekly_price_connects: int
    next_charge_at: datetime | None


@dataclass(frozen=True)
class BadgePriceChanged:
    category: str
    previous_weekly_price_connects: int
    weekly_price_connects: int
    charge_interval: timedelta


Fact = (AuctionOpened | BidPlaced | BidRaised | BidInteractionCounted | BidUnboosted | AuctionClosed | BidSettled
        | AuctionSettled | BadgeStarted | BadgeStopped | BadgeCharged | BadgePriceChanged)
