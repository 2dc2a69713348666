"""Promoted profiles' use cases: campaigns, placements, clicks. No SQL, gRPC or Kafka here.

Where money is decided:
- GetPlacements reads only the replica's in-memory index (`PlacementIndex`); the frequency cap is reserved
  there, in the same locked step that checks it. It writes nothing to the database.
- RecordClick charges once per placement token: the click row (unique by the token) and the budget
  reservation (`spent < budget`, atomic in the store) commit together *before* the ledger is asked, with a
  connects request_id derived from the token, so a retried, replayed or concurrent click never charges
  twice and a day's spend stays under budget + one max bid. A refused charge gives the reservation back and
  stops the campaign for the day; a ledger that does not answer leaves the click PENDING (reserved), and a
  retry or `resume_pending_clicks` finishes it with the same request_id.
"""

from __future__ import annotations

import abc
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta

from adsmon.events.v1.event_pb2 import Event

from services.ads.domain.promoted import (
    BudgetDay,
    Campaign,
    CampaignNotFound,
    ChangeCampaignState,
    Click,
    ClickOutcome,
    CreateCampaign,
    Priced,
    PromotedRequestIdReused,
    TokenSigner,
    click_key,
    record_click_fingerprint,
    validate_placement_request,
)
from services.ads.service_layer.unit_of_work import SearchRecorder
from services.connects.client import AbstractConnectsClient
from services.kit import errors
from services.kit.uow import AbstractUnitOfWork

log = logging.getLogger(__name__)


# -- ports ---------------------------------------------------------------------------------------------

class AbstractCampaignRepository(abc.ABC):
    @abc.abstractmethod
    def add(self, campaign: Campaign) -> None: ...

    @abc.abstractmethod
    def get(self, campaign_id: str) -> Campaign | None: ...

    @abc.abstractmethod
    def save(self, campaign: Campaign) -> None:
        """Store a changed campaign (its revision already bumped) and mark it changed for the replicas."""

    @abc.abstractmethod
    def list_for(self, freelancer_id: str, limit: int, before: tuple[datetime, str] | None) -> list[Campaign]:
        """A freelancer's campaigns newest first (created_at, then id, descending), after `before`."""


class AbstractBudgetRepository(abc.ABC):
    @abc.abstractmethod
    def get(self, campaign_id: str, day: date) -> BudgetDay | None: ...

    @abc.abstractmethod
    def reserve(self, campaign_id: str, day: date, budget: int, price: int) -> int | None:
        """Atomically add `price` to the day's spend if the spend is below `budget` and the day is not
        stopped; the new spend, or None (nothing changed). Concurrent callers serialise on the day."""

    @abc.abstractmethod
    def refund(self, campaign_id: str, day: date, price: int, *, stop: bool) -> None:
        """Give back a reservation; `stop` ends the campaign's day (the wallet could not pay)."""


class AbstractClickRepository(abc.ABC):
    @abc.abstractmethod
    def claim(self, click: Click) -> Click | None:
        """Insert `click` unless its click_key exists; the existing click then (nothing inserted)."""

    @abc.abstractmethod
    def resolve(self, click_key: str, outcome: ClickOutcome, transaction_id: str, now: datetime) -> bool:
        """Set a PENDING click's outcome; False if it was no longer pending (someone else resolved it)."""

    @abc.abstractmethod
    def pending(self, older_than: datetime, limit: int) -> list[Click]: ...


class AbstractRequestRepository(abc.ABC):
    @abc.abstractmethod
    def get(self, request_id: str) -> tuple[str, bytes] | None:
        """(fingerprint, stored answer) of a request_id seen before."""

    @abc.abstractmethod
    def add(self, request_id: str, fingerprint: str, answer: bytes, now: datetime) -> None:
        """Store the answer (a concurrent duplicate of the same request keeps the first)."""


class PromotedUnitOfWork(AbstractUnitOfWork, abc.ABC):
    campaigns: AbstractCampaignRepository
    budgets: AbstractBudgetRepository
    clicks: AbstractClickRepository
    requests: AbstractRequestRepository


class AbstractPromotedReader(abc.ABC):
    """What a replica reads to build and refresh its index (outside any unit of work)."""

    @abc.abstractmethod
    def changed_since(self, since: datetime | None, day: date) -> tuple[list[Campaign], list[BudgetDay], datetime]:
        """Campaigns and `day`'s budget rows changed at or after `since` (all of them when None), and the
        store's current time (the next `since`, less a look-back for transactions still committing)."""


class PlacementIndex(abc.ABC):
    """The replica's in-memory view of campaigns and today's spend (adapters/promoted_index.py)."""

    @abc.abstractmethod
    def apply(self, campaigns: Sequence[Campaign], days: Sequence[BudgetDay]) -> None: ...

    @abc.abstractmethod
    def choose(self, category: str, viewer_id: str, slots: int, now: datetime) -> list[Priced]:
        """The winners for one search, priced; their frequency-cap impressions already reserved."""


class PromotedEvents(abc.ABC):
    """Builds the envelopes published on ads.events.v1 (adapters; proto lives there)."""

    topic: str

    @abc.abstractmethod
    def campaign_created(self, c: Campaign, now: datetime) -> Event: ...

    @abc.abstractmethod
    def campaign_state_changed(self, c: Campaign, now: datetime) -> Event: ...

    @abc.abstractmethod
    def budget_exhausted(self, c: Campaign, spent: int, now: datetime) -> Event: ...

    @abc.abstractmethod
    def placement_clicked(self, click: Click, now: datetime) -> Event: ...


class PromotedMetricsPort(abc.ABC):
    @abc.abstractmethod
    def placements(self, requested: int, served: Sequence[Priced]) -> None: ...

    @abc.abstractmethod
    def click(self, outcome: ClickOutcome, charged: int) -> None: ...

    @abc.abstractmethod
    def connects_error(self, reason: str) -> None: ...


# -- settings the use cases need -----------------------------------------------------------------------

@dataclass(frozen=True)
class Rules:
    reserve: int = 1
    default_quality_bps: int = 10_000
    click_dedup: bool = True
    default_frequency_cap: int = 3


@dataclass(frozen=True)
class ClickResult:
    outcome: ClickOutcome
    campaign_id: str
    charged: int


@dataclass(frozen=True)
class Served:
    winner: Priced
    token: str


# -- campaigns -----------------------------------------------------------------------------------------

def _campaign_answer(c: Campaign) -> bytes:
    return c.campaign_id.encode()


def _replayed(uow: PromotedUnitOfWork, request_id: str, fingerprint: str) -> bytes | None:
    seen = uow.requests.get(request_id)
    if seen is None:
        return None
    if seen[0] != fingerprint:
        raise PromotedRequestIdReused(request_id)
    return seen[1]


def create_campaign(uow: PromotedUnitOfWork, cmd: CreateCampaign, events: PromotedEvents, rules: Rules,
                    now: datetime) -> Campaign:
    cmd.validate(rules.reserve)
    with uow:
        answer = _replayed(uow, cmd.request_id, cmd.fingerprint())
        if answer is not None:
            return _must_get(uow, answer.decode())
        campaign = cmd.new_campaign(now, rules.default_quality_bps, rules.default_frequency_cap)
        uow.campaigns.add(campaign)
        uow.requests.add(cmd.request_id, cmd.fingerprint(), _campaign_answer(campaign), now)
        uow.publish(events.topic, events.campaign_created(campaign, now))
        uow.commit()
    return campaign


def change_campaign_state(uow: PromotedUnitOfWork, cmd: ChangeCampaignState, events: PromotedEvents,
                          now: datetime) -> Campaign:
    """PauseCampaign / ResumeCampaign: idempotent; an unchanged state publishes nothing."""
    cmd.validate()
    with uow:
        answer = _replayed(uow, cmd.request_id, cmd.fingerprint())
        if answer is not None:
            return _must_get(uow, answer.decode())
        campaign = _must_get(uow, cmd.campaign_id)
        changed = campaign.paused(now) if cmd.pause else campaign.resumed(now)
        if changed is not campaign:
            uow.campaigns.save(changed)
            uow.publish(events.topic, events.campaign_state_changed(changed, now))
        uow.requests.add(cmd.request_id, cmd.fingerprint(), _campaign_answer(changed), now)
        uow.commit()
    return changed


def _must_get(uow: PromotedUnitOfWork, campaign_id: str) -> Campaign:
    campaign = uow.campaigns.get(campaign_id)
    if campaign is None:
        raise CampaignNotFound(campaign_id)
    return campaign


def get_campaign(uow: PromotedUnitOfWork, campaign_id: str, now: datetime) -> tuple[Campaign, int]:
    """The campaign and its spend today (reserved clicks included)."""
    errors.require(bool(campaign_id), "campaign_id", "is required")
    with uow:
        campaign = _must_get(uow, campaign_id)
        day = uow.budgets.get(campaign_id, now.date())
    return campaign, day.spent if day else 0


def list_campaigns(uow: PromotedUnitOfWork, freelancer_id: str, page_size: int,
                   before: tuple[datetime, str] | None, now: datetime
                   ) -> tuple[list[tuple[Campaign, int]], tuple[datetime, str] | None]:
    """One page (newest first) with today's spend, and the cursor of the next page (None on the last)."""
    errors.require(bool(freelancer_id), "freelancer_id", "is required")
    errors.require(page_size >= 0, "page_size", "must not be negative")
    size = min(page_size or 50, 500)
    with uow:
        found = uow.campaigns.list_for(freelancer_id, size + 1, before)
        page = [(c, (d.spent if (d := uow.budgets.get(c.campaign_id, now.date())) else 0)) for c in found[:size]]
    cursor = (found[size - 1].created_at, found[size - 1].campaign_id) if len(found) > size else None
    return page, cursor


# -- placements ----------------------------------------------------------------------------------------

def get_placements(index: PlacementIndex, signer: TokenSigner, metrics: PromotedMetricsPort, category: str,
                   viewer_id: str, slots: int, now: datetime, searches: SearchRecorder | None = None) -> list[Served]:
    """Choose, price and sign the placements for one search, and count the search in its category (the
    badge price's demand). Memory only: nothing is written anywhere."""
    validate_placement_request(category, viewer_id, slots)
    if searches is not None:
        searches.record(category, now)
    winners = index.choose(category, viewer_id, slots, now)
    metrics.placements(slots, winners)
    return [Served(w, signer.sign(w, viewer_id, now)[1]) for w in winners]


# -- clicks --------------------------------------------------------------------------------------------

def _click_answer(result: ClickResult) -> bytes:
    return json.dumps([result.outcome.value, result.campaign_id, result.charged]).encode()


def _click_from_answer(answer: bytes) -> ClickResult:
    outcome, campaign_id, charged = json.loads(answer)
    return ClickResult(ClickOutcome(outcome), campaign_id, int(charged))


@dataclass
class ClickCharger:
    """RecordClick and the resumption of clicks left pending; one per replica."""

    uow_factory: Callable[[], PromotedUnitOfWork]
    connects: AbstractConnectsClient
    index: PlacementIndex
    signer: TokenSigner
    events: PromotedEvents
    metrics: PromotedMetricsPort
    rules: Rules

    def record_click(self, request_id: str, token: str, now: datetime) -> ClickResult:
        errors.require(bool(request_id), "request_id", "is required")
        claim = self.signer.verify(token, now)
        fingerprint = record_click_fingerprint(token)
        with self.uow_factory() as uow:
            answer = _replayed(uow, request_id, fingerprint)
            if answer is not None:
                return _click_from_answer(answer)
            campaign = uow.campaigns.get(claim.campaign_id)
            if campaign is None:  # signed by us for a campaign that is gone: not a click we can charge
                raise CampaignNotFound(claim.campaign_id)
            click = Click(click_key=click_key(claim, request_id, dedup=self.rules.click_dedup),
                          token_id=claim.token_id, request_id=request_id, campaign_id=claim.campaign_id,
                          freelancer_id=claim.freelancer_id, category=claim.category, position=claim.position,
                          price=claim.price, day=datetime.fromtimestamp(claim.issued_at, now.tzinfo).date(),
                          outcome=ClickOutcome.PENDING, created_at=now, request_fingerprint=fingerprint)
            existing = uow.clicks.claim(click)
            if existing is None:
                spent = uow.budgets.reserve(click.campaign_id, click.day, campaign.daily_budget, click.price)
                if spent is None:
                    self.index.apply((), [BudgetDay(click.campaign_id, click.day, campaign.daily_budget)])
                    return self._finish(uow, click, ClickOutcome.BUDGET_EXHAUSTED, fingerprint, now, resolve=True)
                if spent >= campaign.daily_budget:
                    uow.publish(self.events.topic, self.events.budget_exhausted(campaign, spent, now))
                uow.commit()
                reserved = spent
            elif existing.request_id != request_id or existing.outcome is not ClickOutcome.PENDING:
                return self._finish(uow, click, ClickOutcome.DUPLICATE, fingerprint, now)
        if existing is not None:  # our own earlier attempt, left pending: finish it (same ledger request_id)
            return self._charge(existing, fingerprint, now)
        # Serving stops placing an exhausted campaign before this click is answered.
        self.index.apply((), [BudgetDay(click.campaign_id, click.day, reserved)])
        return self._charge(click, fingerprint, now)

    def _finish(self, uow: PromotedUnitOfWork, click: Click, outcome: ClickOutcome, fingerprint: str,
                now: datetime, *, resolve: bool = False, transaction_id: str = "") -> ClickResult:
        """Record a click's final outcome, its answer for the request_id and its event; commit."""
        final = replace(click, outcome=outcome, transaction_id=transaction_id)
        if resolve and not uow.clicks.resolve(click.click_key, outcome, transaction_id, now):
            uow.rollback()
            return self._resolved_elsewhere(click, fingerprint)
        result = ClickResult(outcome, click.campaign_id, final.charged)
        uow.requests.add(click.request_id, fingerprint, _click_answer(result), now)
        uow.publish(self.events.topic, self.events.placement_clicked(final, now))
        uow.commit()
        self.metrics.click(outcome, final.charged)
        return result

    def _resolved_elsewhere(self, click: Click, fingerprint: str) -> ClickResult:
        with self.uow_factory() as uow:
            seen = uow.requests.get(click.request_id)
        if seen is None:  # resolved by the resumer without our fingerprint: it stored the same outcome
            raise errors.Aborted("CLICK_IN_PROGRESS", "the click is being charged; retry with the same request_id")
        return _click_from_answer(seen[1])

    def _charge(self, click: Click, fingerprint: str, now: datetime) -> ClickResult:
        """Ask the ledger for the reserved price (idempotent request_id), then record the outcome."""
        try:
            move = self.connects.spend(click.spend_request_id, click.freelancer_id, click.price,
                                       "PROMOTED_PROFILE", f"campaign:{click.campaign_id}:click:{click.token_id}")
        except (errors.Unavailable, errors.PermissionDenied, errors.Unauthenticated, errors.Aborted) as exc:
            self.metrics.connects_error(exc.reason)
            raise  # the click stays PENDING with its budget reserved; a retry or the resumer finishes it
        except (errors.FailedPrecondition, errors.InvalidArgument, errors.NotFound) as exc:
            # The ledger refused this wallet (not us: a PermissionDenied stays pending, an alert, not a refusal).
            self.metrics.connects_error(exc.reason)
            stop = exc.reason == "INSUFFICIENT_CONNECTS"
            with self.uow_factory() as uow:
                uow.budgets.refund(click.campaign_id, click.day, click.price, stop=stop)
                result = self._finish(uow, click, ClickOutcome.INSUFFICIENT_CONNECTS, fingerprint, now,
                                      resolve=True)
            if stop:
                self.index.apply((), [BudgetDay(click.campaign_id, click.day, 0, stopped=True)])
            return result
        with self.uow_factory() as uow:
            return self._finish(uow, click, ClickOutcome.CHARGED, fingerprint, now, resolve=True,
                                transaction_id=move.transaction_id)

    def resume_pending_clicks(self, now: datetime, *, older_than: timedelta = timedelta(seconds=30),
                              limit: int = 100) -> int:
        """Finish clicks whose charge was left unconfirmed (ledger down, process killed). Returns how many
        were tried; safe in several replicas at once (same request_id to connects, resolve guarded)."""
        with self.uow_factory() as uow:
            stuck = uow.clicks.pending(now - older_than, limit)
        for click in stuck:
            try:
                self._charge(click, click.request_fingerprint, now)
            except errors.DomainError as exc:
                log.info("pending click %s not finished yet: %s", click.click_key, exc.reason)
                break
        return len(stuck)

