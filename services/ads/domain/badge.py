"""The availability badge: a weekly price driven by demand, charged one Connect at a time.

Pricing (documented and deterministic, so every replica computes the same price):

    weekly_price = clamp(min_price, max_price,
                         base_price + active_badges // badges_per_step + searches // searches_per_step)

where `active_badges` are the category's active badges and `searches` the category's talent searches in
the last 7 days: more competition for attention, or more buyers looking, raise the price.

Metering: a badge charges one Connect every `7 days / weekly_price`, the first at start. A badge week
starts at the start time and repeats every 7 days; at most `weekly_max` Connects are charged in one
badge week whatever the price did. A price change re-times the next charge to `last charge + 7 days /
new price` (or now, if that is already past); a price above the maximum switches the badge off, and so
does a charge the wallet cannot pay.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from services.ads.domain import errors
from services.ads.domain import events as ev

WEEK = timedelta(days=7)
MAX_WEEKLY_MAX = 10_000


@dataclass(frozen=True)
class Pricing:
    base_price: int = 7
    badges_per_step: int = 10
    searches_per_step: int = 1000
    min_price: int = 1
    max_price: int = 168  # one Connect an hour

    def weekly_price(self, active_badges: int, searches: int) -> int:
        price = self.base_price + active_badges // self.badges_per_step + searches // self.searches_per_step
        return max(self.min_price, min(self.max_price, price))


def charge_interval(weekly_price: int) -> timedelta:
    return WEEK / weekly_price


class BadgeState(StrEnum):
    INACTIVE = "INACTIVE"
    ACTIVE = "ACTIVE"


class StopReason(StrEnum):
    USER = "USER"
    PRICE_ABOVE_MAX = "PRICE_ABOVE_MAX"
    INSUFFICIENT_CONNECTS = "INSUFFICIENT_CONNECTS"


def charge_request_id(badge_id: str, seq: int) -> str:
    return f"ads:badge:{badge_id}:charge:{seq}"


@dataclass(frozen=True)
class Charge:
    """One Connect to take for a badge; (badge_id, seq) is unique, so it is never taken twice."""

    badge_id: str
    freelancer_id: str
    seq: int
    due_at: datetime
    weekly_price: int
    amount: int = 1

    @property
    def request_id(self) -> str:
        return charge_request_id(self.badge_id, self.seq)


@dataclass
class Badge:
    freelancer_id: str
    state: BadgeState = BadgeState.INACTIVE
    category: str = ""
    badge_id: str = ""  # one id per start: the charges of one run
    weekly_max: int = 0
    weekly_price: int = 0
    started_at: datetime | None = None
    stopped_at: datetime | None = None
    stop_reason: StopReason | None = None
    week_started_at: datetime | None = None
    charged_this_week: int = 0  # charges of this badge week taken or in flight
    charges: int = 0  # charges issued in this run (the next charge's seq)
    last_charge_at: datetime | None = None
    next_charge_at: datetime | None = None
    facts: list[ev.Fact] | None = None

    def __post_init__(self) -> None:
        if self.facts is None:
            self.facts = []

    @property
    def active(self) -> bool:
        return self.state is BadgeState.ACTIVE

    def _record(self, fact: ev.Fact) -> None:
        assert self.facts is not None
        self.facts.append(fact)

    def start(self, *, badge_id: str, category: str, weekly_max: int, price: int, now: datetime) -> Charge:
        """Turn the badge on and issue its first charge (due now)."""
        if self.active:
            raise errors.BadgeAlreadyActive(self.freelancer_id)
        if price > weekly_max:
            raise errors.BadgePriceAboveMax(price, weekly_max)
        self.state, self.category, self.badge_id = BadgeState.ACTIVE, category, badge_id
        self.weekly_max, self.weekly_price = weekly_max, price
        self.started_at, self.stopped_at, self.stop_reason = now, None, None
        self.week_started_at, self.charged_this_week, self.charges = now, 0, 0
        self.last_charge_at, self.next_charge_at = None, now
        charge = self.due_charge(now)
        assert charge is not None
        self._record(ev.BadgeStarted(self.freelancer_id, weekly_max, price, self.next_charge_at or now))
        return charge

    def stop(self, reason: StopReason, now: datetime) -> bool:
        """Turn the badge off; False if it was not on (nothing changes)."""
        if not self.active:
            return False
        self.state, self.stopped_at, self.stop_reason, self.next_charge_at = BadgeState.INACTIVE, now, reason, None
        self._record(ev.BadgeStopped(self.freelancer_id, reason.value, self.weekly_price))
        return True

    def reprice(self, price: int, now: datetime) -> None:
        """Demand moved the price: re-time the next charge, or switch off above the maximum."""
        if not self.active or price == self.weekly_price:
            return
        if price > self.weekly_max:
            self.weekly_price = price
            self.stop(StopReason.PRICE_ABOVE_MAX, now)
            return
        self.weekly_price = price
        if self.charged_this_week >= self.weekly_max:
            return  # capped until the next badge week; the timing resumes there
        assert self.last_charge_at is not None
        self.next_charge_at = max(now, self.last_charge_at + charge_interval(price))

    def due_charge(self, now: datetime) -> Charge | None:
        """The next charge if it is due at `now` (call again: a badge far behind catches up one at a time)."""
        if not self.active or self.next_charge_at is None or self.next_charge_at > now:
            return None
        assert self.week_started_at is not None
        at = self.next_charge_at
        while at >= self.week_started_at + WEEK:
            self.week_started_at += WEEK
            self.charged_this_week = 0
        if self.charged_this_week >= self.weekly_max:
            self.next_charge_at = self.week_started_at + WEEK  # capped: nothing more this badge week
            return None
        charge = Charge(self.badge_id, self.freelancer_id, self.charges, at, self.weekly_price)
        self.charges += 1
        self.charged_this_week += 1
        self.last_charge_at = at
        self.next_charge_at = at + charge_interval(self.weekly_price)
        return charge

    def charge_taken(self, charge: Charge, transaction_id: str) -> None:
        self._record(ev.BadgeCharged(self.freelancer_id, charge.amount, transaction_id, self.charged_this_week,
                                     charge.weekly_price, self.next_charge_at))

    def charge_refused(self, charge: Charge, now: datetime) -> None:
        """The wallet could not pay: the charge did not happen and the badge switches off."""
        if charge.badge_id == self.badge_id and self.week_started_at and charge.due_at >= self.week_started_at:
            self.charged_this_week = max(0, self.charged_this_week - 1)
        if charge.badge_id == self.badge_id:
            self.stop(StopReason.INSUFFICIENT_CONNECTS, now)
