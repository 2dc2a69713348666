"""Badge use cases: start, stop, read; the meter (due charges, their ledger spends) and the pricing tick.

Every charge is a row with a unique (badge run, seq) and a ledger request id derived from it
(`ads:badge:<badge_id>:charge:<seq>`), issued in the transaction that advances the badge's timeline, then
spent through the ledger and recorded. Two replicas metering at once claim different badges and charges
(skip locked); a charge replayed after a crash gets the ledger's first answer.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from services.ads.domain import events as ev
from services.ads.domain.badge import MAX_WEEKLY_MAX, WEEK, Badge, Charge, Pricing, StopReason, charge_interval
from services.ads.service_layer import views
from services.ads.service_layer.auctions import UowFactory, publish_facts, require_id, stored_request
from services.ads.service_layer.metrics import Metrics, NoMetrics
from services.ads.service_layer.unit_of_work import AdsUnitOfWork, SearchCounter
from services.connects.client import AbstractConnectsClient
from services.kit.errors import DomainError, Unavailable, require

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BadgeSettings:
    pricing: Pricing = field(default_factory=Pricing)
    sync_charge_grace: timedelta = timedelta(seconds=30)  # the meter leaves StartBadge's first charge alone


def badge_reference(badge_id: str) -> str:
    return f"badge:{badge_id}"


def current_price(uow: AdsUnitOfWork, category: str, pricing: Pricing, searches: SearchCounter,
                  now: datetime) -> int:
    """The category's price as last set by the pricing tick, or computed now for a new category."""
    if not category:
        return pricing.weekly_price(0, 0)
    stored = uow.prices.get(category)
    if stored is not None:
        return stored
    active = uow.badges.active_counts().get(category, 0)
    return pricing.weekly_price(active, searches.searches(uow, category, now - WEEK, now))


def _validate(freelancer_id: str, request_id: str | None = None) -> None:
    require_id(freelancer_id, "freelancer_id")
    if request_id is not None:
        require_id(request_id, "request_id")


def start_badge(uow_factory: UowFactory, connects: AbstractConnectsClient, request_id: str, freelancer_id: str,
                category: str, weekly_max: int, now: datetime, settings: BadgeSettings, searches: SearchCounter,
                metrics: Metrics | None = None) -> views.BadgeView:
    """Turn the badge on and take its first Connect; INSUFFICIENT_CONNECTS leaves it off."""
    metrics = metrics or NoMetrics()
    _validate(freelancer_id, request_id)
    require(bool(category) and len(category) <= 128, "category", "is required (at most 128 characters)")
    require(1 <= weekly_max <= MAX_WEEKLY_MAX, "weekly_max_connects", f"must be between 1 and {MAX_WEEKLY_MAX}")
    fp = views.fingerprint("StartBadge", freelancer_id, category, weekly_max)
    with uow_factory() as uow:
        replay = stored_request(uow, request_id, fp)
        badge = uow.badges.get(freelancer_id) or Badge(freelancer_id)
        if replay is not None and replay.done:
            return views.badge_view(badge, badge.weekly_price)
        if replay is not None:  # the first charge is still waiting for the ledger: resume it
            charge = Charge(badge.badge_id, freelancer_id, 0, badge.started_at or now, badge.weekly_price)
        else:
            price = current_price(uow, category, settings.pricing, searches, now)
            charge = badge.start(badge_id=uuid.uuid4().hex, category=category, weekly_max=weekly_max, price=price,
                                 now=now)
            uow.badges.save(badge)
            uow.charges.add(charge, now + settings.sync_charge_grace)
            uow.requests.add(request_id, "StartBadge", fp, now)
            publish_facts(uow, badge.facts or [], now, request_id)
            uow.commit()
    execute_charge(uow_factory, connects, charge, now, metrics, request_id=request_id)
    return get_badge(uow_factory, freelancer_id, category, settings, searches, now)


def execute_charge(uow_factory: UowFactory, connects: AbstractConnectsClient, charge: Charge, now: datetime,
                   metrics: Metrics, *, request_id: str | None = None) -> bool:
    """Spend one charge in the ledger and record the answer (safe to repeat). False if it must be retried.

    The charge's row stays locked from before the spend until its answer is recorded, so no other replica
    (nor a retried StartBadge) calls the ledger for it meanwhile, whatever the clocks say about the claim's
    lease; a replica that dies mid-call releases the lock with its connection. With `request_id`
    (StartBadge) a refusal is raised after it is recorded, and the request forgotten.
    """
    with uow_factory() as uow:
        status = uow.charges.lock(charge.request_id, wait=request_id is not None)
        if status != "PENDING":  # answered already, or (None) another replica is spending it right now
            if request_id is not None and status is not None:  # a StartBadge retry after the meter took it
                if status == "DONE":
                    uow.requests.complete(request_id, "{}")
                else:
                    uow.requests.forget(request_id)
                uow.commit()
            return True
        try:
            move = connects.spend(charge.request_id, charge.freelancer_id, charge.amount, "BADGE",
                                  badge_reference(charge.badge_id))
        except Unavailable as exc:
            metrics.connects_error("spend", exc.reason)
            if request_id is not None:
                raise  # the meter takes the charge after StartBadge's grace
            uow.charges.retry_later(charge.request_id, now + timedelta(seconds=5))
            uow.commit()
            return False
        except DomainError as refusal:
            if refusal.reason != "INSUFFICIENT_CONNECTS":
                metrics.connects_error("spend", refusal.reason)
            uow.charges.resolve(charge.request_id, "FAILED", None, now)
            badge = uow.badges.get(charge.freelancer_id)
            if badge is not None:
                badge.charge_refused(charge, now)
                uow.badges.save(badge)
                if not badge.active:
                    metrics.badge_stopped(badge.stop_reason.value if badge.stop_reason else "")
                publish_facts(uow, badge.facts or [], now, request_id)
            if request_id is not None:
                uow.requests.forget(request_id)
            uow.commit()
            if request_id is not None:
                raise
            log.info("badge charge %s refused: %s", charge.request_id, refusal.reason)
            return True
        uow.charges.resolve(charge.request_id, "DONE", move.transaction_id, now)
        badge = uow.badges.get(charge.freelancer_id)
        if badge is not None:
            badge.charge_taken(charge, move.transaction_id)
            publish_facts(uow, badge.facts or [], now, request_id)
        metrics.badge_charged(charge.amount)
        if request_id is not None:
            uow.requests.complete(request_id, "{}")
        uow.commit()
    return True


def stop_badge(uow_factory: UowFactory, request_id: str, freelancer_id: str, now: datetime,
               settings: BadgeSettings, searches: SearchCounter, metrics: Metrics | None = None) -> views.BadgeView:
    _validate(freelancer_id, request_id)
    fp = views.fingerprint("StopBadge", freelancer_id)
    with uow_factory() as uow:
        if not stored_request(uow, request_id, fp):
            badge = uow.badges.get(freelancer_id)
            if badge is not None and badge.stop(StopReason.USER, now):
                uow.badges.save(badge)
                (metrics or NoMetrics()).badge_stopped(StopReason.USER.value)
                publish_facts(uow, badge.facts or [], now, request_id)
            uow.requests.add(request_id, "StopBadge", fp, now, "{}")
            uow.commit()
    return get_badge(uow_factory, freelancer_id, "", settings, searches, now)


def get_badge(uow_factory: UowFactory, freelancer_id: str, category: str, settings: BadgeSettings,
              searches: SearchCounter, now: datetime) -> views.BadgeView:
    _validate(freelancer_id)
    with uow_factory() as uow:
        badge = uow.badges.get(freelancer_id, lock=False) or Badge(freelancer_id)
        price = current_price(uow, badge.category or category, settings.pricing, searches, now)
    return views.badge_view(badge, price)


def issue_due_charges(uow_factory: UowFactory, now: datetime, limit: int = 100) -> int:
    """Advance the timeline of badges with a charge due: one charge row per due Connect."""
    issued = 0
    with uow_factory() as uow:
        for freelancer_id in uow.badges.claim_due(now, limit):
            badge = uow.badges.get(freelancer_id)
            assert badge is not None
            while (charge := badge.due_charge(now)) is not None:
                uow.charges.add(charge, now)
                issued += 1
            uow.badges.save(badge)
        uow.commit()
    return issued


def run_due_charges(uow_factory: UowFactory, connects: AbstractConnectsClient, clock: Callable[[], datetime],
                    metrics: Metrics | None = None, limit: int = 100,
                    lease: timedelta = timedelta(seconds=30)) -> int:
    """Claim pending charges and spend them through the ledger. Returns the charges claimed."""
    metrics = metrics or NoMetrics()
    with uow_factory() as uow:
        claimed = uow.charges.claim(clock(), lease, limit)
        uow.commit()
    for charge in claimed:
        execute_charge(uow_factory, connects, charge, clock(), metrics)
    return len(claimed)


def reprice(uow_factory: UowFactory, now: datetime, pricing: Pricing, searches: SearchCounter,
            metrics: Metrics | None = None) -> int:
    """The pricing tick: recompute each category's price; re-time or switch off its badges on a change."""
    changed = 0
    with uow_factory() as uow:
        counts = uow.badges.active_counts()
        prices = uow.prices.all()
        for category in sorted(set(counts) | set(prices)):
            price = pricing.weekly_price(counts.get(category, 0), searches.searches(uow, category, now - WEEK, now))
            previous = prices.get(category)
            if price == previous or not uow.prices.put(category, price, now, previous=previous):
                continue
            changed += 1
            if previous is not None:
                publish_facts(uow, [ev.BadgePriceChanged(category, previous, price, charge_interval(price))], now)
            for freelancer_id in uow.badges.active_in(category):
                badge = uow.badges.get(freelancer_id)
                assert badge is not None
                badge.reprice(price, now)
                uow.badges.save(badge)
                if not badge.active:
                    (metrics or NoMetrics()).badge_stopped(badge.stop_reason.value if badge.stop_reason else "")
                publish_facts(uow, badge.facts or [], now)
        uow.commit()
    return changed
