"""Promoted profiles in talent search: campaigns, GSP pricing, pacing, frequency caps, placement tokens.

Pure Python (no I/O). Money is whole Connects (int); quality scores are integer
basis points (10,000 = 1.0), so ranking and pricing are exact integer
arithmetic:

- rank by bid x quality (ties to the older campaign, then the id);
- generalized second price: winner i pays the least that keeps its position,
  p_i = ceil(b_{i+1} * q_{i+1} / q_i), never below the reserve and never above
  its own bid (b_i * q_i >= b_{i+1} * q_{i+1} makes that automatic for bids
  at or above the reserve);
- pacing: by second s of the UTC day a campaign may have spent at most
  ceil(budget * (s + headroom) / 86,400); past that it is not placed until the
  curve catches up;
- a frequency cap per (viewer, campaign, UTC day), taken as a reservation when
  a placement is served, never counted afterwards.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import os
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta

from services.kit.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, require

QUALITY_BASIS = 10_000  # basis points: 10,000 = quality 1.0
MAX_QUALITY_BPS = 100 * QUALITY_BASIS
MAX_CONNECTS = 10**9  # an absurd bid or budget is refused, not stored
MAX_SLOTS = 10
MAX_FREQUENCY_CAP = 1000
SECONDS_PER_DAY = 86_400
_ID = re.compile(r"^[A-Za-z0-9._:@-]{1,128}$")
_CATEGORY = re.compile(r"^[A-Za-z0-9._/-]{1,64}$")


# -- refusals ---------------------------------------------------------------------------------------

class CampaignNotFound(NotFound):
    def __init__(self, campaign_id: str) -> None:
        super().__init__("CAMPAIGN_NOT_FOUND", f"no campaign {campaign_id!r}", campaign_id=campaign_id)


class BidTooLow(FailedPrecondition):
    def __init__(self, bid: int, reserve: int) -> None:
        super().__init__("BID_TOO_LOW", f"max_cpc_connects {bid} is below the reserve price {reserve}",
                         field="max_cpc_connects", reserve_connects=reserve)


class PlacementTokenInvalid(InvalidArgument):
    def __init__(self, why: str) -> None:
        super().__init__("PLACEMENT_TOKEN_INVALID", f"placement_token: {why}", field="placement_token")


class PlacementExpired(FailedPrecondition):
    def __init__(self, expired_at: datetime) -> None:
        super().__init__("PLACEMENT_EXPIRED", "the placement is older than its click window",
                         expired_at=expired_at.isoformat())


class PromotedRequestIdReused(AlreadyExists):
    def __init__(self, request_id: str) -> None:
        super().__init__("REQUEST_ID_REUSED", "request_id was already used for a different request",
                         request_id=request_id)


class InvalidPageToken(InvalidArgument):
    def __init__(self) -> None:
        super().__init__("INVALID_PAGE_TOKEN", "page_token is malformed or from another query",
                         field="page_token")


# -- campaigns --------------------------------------------------------------------------------------

class CampaignState(enum.StrEnum):
    ACTIVE = "ACTIVE"
    PAUSED = "PAUSED"


class ClickOutcome(enum.StrEnum):
    PENDING = "PENDING"  # budget reserved, the ledger not yet confirmed (resumed by a retry or the worker)
    CHARGED = "CHARGED"
    DUPLICATE = "DUPLICATE"
    BUDGET_EXHAUSTED = "BUDGET_EXHAUSTED"
    INSUFFICIENT_CONNECTS = "INSUFFICIENT_CONNECTS"


@dataclass(frozen=True)
class Campaign:
    """A promoted-profile campaign. `revision` grows with every change (replicas keep the newest)."""

    campaign_id: str
    freelancer_id: str
    category: str
    max_cpc: int
    daily_budget: int
    quality_bps: int
    state: CampaignState
    created_at: datetime
    updated_at: datetime
    revision: int = 1
    frequency_cap: int = 3  # impressions per viewer per UTC day

    @property
    def score(self) -> int:
        return self.max_cpc * self.quality_bps

    def paused(self, now: datetime) -> Campaign:
        if self.state is CampaignState.PAUSED:
            return self
        return replace(self, state=CampaignState.PAUSED, updated_at=now, revision=self.revision + 1)

    def resumed(self, now: datetime) -> Campaign:
        if self.state is CampaignState.ACTIVE:
            return self
        return replace(self, state=CampaignState.ACTIVE, updated_at=now, revision=self.revision + 1)


def _require_id(value: str, field: str) -> None:
    require(bool(value), field, "is required")
    require(bool(_ID.match(value)), field, "must be 1-128 letters, digits or ._:@-")


def _require_connects(value: int, field: str) -> None:
    require(value > 0, field, "must be a positive number of Connects")
    require(value <= MAX_CONNECTS, field, f"must be at most {MAX_CONNECTS:,}")


@dataclass(frozen=True)
class CreateCampaign:
    request_id: str
    freelancer_id: str
    category: str
    max_cpc: int
    daily_budget: int
    frequency_cap: int = 0  # 0: the service's default

    def validate(self, reserve: int) -> None:
        _require_id(self.request_id, "request_id")
        _require_id(self.freelancer_id, "freelancer_id")
        require(bool(self.category), "category", "is required")
        require(bool(_CATEGORY.match(self.category)), "category", "must be 1-64 letters, digits or ._/-")
        _require_connects(self.max_cpc, "max_cpc_connects")
        _require_connects(self.daily_budget, "daily_budget_connects")
        require(self.daily_budget >= self.max_cpc, "daily_budget_connects", "must be at least max_cpc_connects")
        require(0 <= self.frequency_cap <= MAX_FREQUENCY_CAP, "frequency_cap",
                f"must be between 0 (the default) and {MAX_FREQUENCY_CAP}")
        if self.max_cpc < reserve:
            raise BidTooLow(self.max_cpc, reserve)

    def fingerprint(self) -> str:
        return fingerprint("create", self.freelancer_id, self.category, self.max_cpc, self.daily_budget,
                           self.frequency_cap)

    def new_campaign(self, now: datetime, quality_bps: int, default_cap: int) -> Campaign:
        return Campaign(campaign_id=f"cmp-{uuid.uuid4().hex}", freelancer_id=self.freelancer_id,
                        category=self.category, max_cpc=self.max_cpc, daily_budget=self.daily_budget,
                        quality_bps=quality_bps, state=CampaignState.ACTIVE, created_at=now, updated_at=now,
                        frequency_cap=self.frequency_cap or default_cap)


@dataclass(frozen=True)
class ChangeCampaignState:
    """PauseCampaign (`pause=True`) or ResumeCampaign."""

    request_id: str
    campaign_id: str
    pause: bool

    def validate(self) -> None:
        _require_id(self.request_id, "request_id")
        _require_id(self.campaign_id, "campaign_id")

    def fingerprint(self) -> str:
        return fingerprint("pause" if self.pause else "resume", self.campaign_id)


def fingerprint(*parts: object) -> str:
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()


def validate_placement_request(category: str, viewer_id: str, slots: int) -> None:
    require(bool(category), "category", "is required")
    require(bool(_CATEGORY.match(category)), "category", "must be 1-64 letters, digits or ._/-")
    _require_id(viewer_id, "viewer_id")
    require(1 <= slots <= MAX_SLOTS, "slots", f"must be between 1 and {MAX_SLOTS}")


# -- ranking and prices ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Priced:
    """A winner: its campaign, 1-based position and price per click."""

    campaign: Campaign
    position: int
    price: int


def rank_key(c: Campaign) -> tuple[int, datetime, str]:
    """Sort key: higher bid x quality first; ties to the older campaign, then the smaller id."""
    return (-c.score, c.created_at, c.campaign_id)


def gsp_price(next_score: int, quality_bps: int, reserve: int, bid: int) -> int:
    """ceil(b_{i+1} * q_{i+1} / q_i), at least `reserve`, at most `bid` (integers only)."""
    second = -(-next_score // quality_bps)  # ceiling division
    return min(bid, max(reserve, second))


def price_winners(ranked: Sequence[Campaign], slots: int, reserve: int) -> list[Priced]:
    """The first `slots` of `ranked` (already in rank order, eligible only), each priced by GSP: the next
    eligible campaign's score sets the price; the last one (none below) pays the reserve."""
    winners = []
    for i, campaign in enumerate(ranked[:slots]):
        next_score = ranked[i + 1].score if i + 1 < len(ranked) else 0
        winners.append(Priced(campaign, i + 1, gsp_price(next_score, campaign.quality_bps, reserve,
                                                         campaign.max_cpc)))
    return winners


# -- pacing and budgets ------------------------------------------------------------------------------

def seconds_into_day(now: datetime) -> int:
    return now.hour * 3600 + now.minute * 60 + now.second


def paced_allowance(daily_budget: int, now: datetime, headroom_seconds: int) -> int:
    """The most a campaign may have spent by `now` (UTC): its budget spread evenly over the day, `headroom`
    seconds ahead of the clock, never more than the budget."""
    elapsed = seconds_into_day(now) + headroom_seconds
    return min(daily_budget, -(-daily_budget * elapsed // SECONDS_PER_DAY))


@dataclass(frozen=True)
class BudgetDay:
    """A campaign's spend on one UTC day. `spent` includes clicks reserved but not yet confirmed.
    `stopped` marks a day ended early (the owner's wallet could not pay)."""

    campaign_id: str
    day: date
    spent: int = 0
    stopped: bool = False

    def exhausted(self, daily_budget: int) -> bool:
        return self.stopped or self.spent >= daily_budget


def may_charge(spent: int, daily_budget: int) -> bool:
    """The reservation rule a click is charged under (applied atomically by the store): only while
    spend is below the budget, so a day's spend stays under budget + one click (<= one max bid)."""
    return spent < daily_budget


def servable(campaign: Campaign, day: BudgetDay | None, now: datetime, *, pacing: bool,
             headroom_seconds: int) -> bool:
    """Eligible to be placed now: active, budget left today and (with pacing) under the pacing curve."""
    if campaign.state is not CampaignState.ACTIVE:
        return False
    spent = day.spent if day is not None and day.day == now.date() else 0
    if day is not None and day.day == now.date() and day.stopped:
        return False
    if spent >= campaign.daily_budget:
        return False
    return not pacing or spent < paced_allowance(campaign.daily_budget, now, headroom_seconds)


# -- placement tokens --------------------------------------------------------------------------------

@dataclass(frozen=True)
class PlacementClaim:
    """What a placement token proves: this service showed `campaign_id` to `viewer_id` at `price`."""

    token_id: str
    campaign_id: str
    freelancer_id: str
    viewer_id: str
    category: str
    position: int
    price: int
    issued_at: int  # unix seconds
    expires_at: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenSigner:
    """Signs and verifies placement tokens: `pt1~<token id>~<campaign>~<freelancer>~<viewer>~<category>~
    <position>~<price>~<issued>~<expires>~<HMAC-SHA256, 160 bits, base64url>`.

    The fields are ids validated to exclude `~`, so the token needs no further encoding: signing is one HMAC
    and one join (it runs five times per GetPlacements). Opaque to callers; not secret, only unforgeable.
    """

    PREFIX = "pt1"
    FIELDS = 11

    def __init__(self, key: bytes, *, window: timedelta) -> None:
        if len(key) < 32:
            raise ValueError("the placement token key must be at least 32 bytes")
        self._key = key
        self.window_seconds = int(window.total_seconds())

    def _mac(self, body: str) -> str:
        return _b64(hmac.digest(self._key, body.encode(), "sha256")[:20])

    def sign(self, winner: Priced, viewer_id: str, now: datetime) -> tuple[PlacementClaim, str]:
        issued = int(now.timestamp())
        c = winner.campaign
        claim = PlacementClaim(_b64(os.urandom(12)), c.campaign_id, c.freelancer_id, viewer_id, c.category,
                               winner.position, winner.price, issued, issued + self.window_seconds)
        body = "~".join((self.PREFIX, claim.token_id, c.campaign_id, c.freelancer_id, viewer_id, c.category,
                         str(winner.position), str(winner.price), str(issued), str(claim.expires_at)))
        return claim, f"{body}~{self._mac(body)}"

    def verify(self, token: str, now: datetime) -> PlacementClaim:
        """The token's claims; PlacementTokenInvalid if it is not ours or was altered, PlacementExpired
        past its click window."""
        if not token:
            raise PlacementTokenInvalid("is required")
        parts = token.split("~")
        if len(parts) != self.FIELDS or parts[0] != self.PREFIX or len(token) > 2048:
            raise PlacementTokenInvalid("is not a placement token")
        body, mac = token.rpartition("~")[0], parts[-1]
        if not hmac.compare_digest(mac, self._mac(body)):
            raise PlacementTokenInvalid("signature does not verify")
        try:
            claim = PlacementClaim(parts[1], parts[2], parts[3], parts[4], parts[5], int(parts[6]), int(parts[7]),
                                   int(parts[8]), int(parts[9]))
        except ValueError:
            raise PlacementTokenInvalid("claims are malformed") from None
        if now.timestamp() > claim.expires_at:
            raise PlacementExpired(datetime.fromtimestamp(claim.expires_at, now.tzinfo))
        return claim


# -- frequency caps ----------------------------------------------------------------------------------

class FrequencyCaps:
    """Impressions per (viewer, campaign) on the current UTC day, held by the replica that owns the viewer.

    `reserve` is the atomic check-and-take: it counts the impression in the same step as it checks the
    campaign's cap (the caller holds the index lock), so no burst of concurrent requests can pass a stale
    count. Counts of earlier days are dropped when the day turns.

    Keyed by one string `viewer~campaign` (ids never contain `~`): a dict of str to int is invisible to
    Python's cyclic garbage collector, so hundreds of thousands of counts add no collector pause to serving
    (tuple keys made a full collection take ~200 ms with 300,000 counts).
    """

    def __init__(self) -> None:
        self._day: date | None = None
        self._counts: dict[str, int] = {}

    def _roll(self, today: date) -> None:
        if self._day != today:
            self._day = today
            self._counts = {}

    def allows(self, viewer_id: str, campaign_id: str, cap: int, today: date) -> bool:
        self._roll(today)
        return self._counts.get(f"{viewer_id}~{campaign_id}", 0) < cap

    def reserve(self, viewer_id: str, campaign_id: str, cap: int, today: date) -> bool:
        self._roll(today)
        key = f"{viewer_id}~{campaign_id}"
        seen = self._counts.get(key, 0)
        if seen >= cap:
            return False
        self._counts[key] = seen + 1
        return True

    def seen(self, viewer_id: str, campaign_id: str, today: date) -> int:
        self._roll(today)
        return self._counts.get(f"{viewer_id}~{campaign_id}", 0)

    def __len__(self) -> int:
        return len(self._counts)


# -- clicks ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Click:
    """One charged (or refused) click. `click_key` is the de-duplication key: the token id (dedup on), or
    the token id and the request id (dedup off)."""

    click_key: str
    token_id: str
    request_id: str
    campaign_id: str
    freelancer_id: str
    category: str
    position: int
    price: int
    day: date
    outcome: ClickOutcome
    transaction_id: str = ""
    created_at: datetime | None = None
    request_fingerprint: str = ""  # of the RecordClick that made it: a retry of that request finishes it

    @property
    def charged(self) -> int:
        return self.price if self.outcome is ClickOutcome.CHARGED else 0

    @property
    def spend_request_id(self) -> str:
        """The connects request_id: derived from the click key, so a retried click never charges twice."""
        return f"ads:click:{self.click_key}:spend"


def click_key(claim: PlacementClaim, request_id: str, *, dedup: bool) -> str:
    if dedup:
        return claim.token_id
    return f"{claim.token_id}-{fingerprint(request_id)[:16]}"


def record_click_fingerprint(token: str) -> str:
    return fingerprint("click", token)
