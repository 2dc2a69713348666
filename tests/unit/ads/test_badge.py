"""Badge metering timelines on the pure aggregate: price changes, weekly maximum, switching off."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.ads.domain import errors
from services.ads.domain.badge import WEEK, Badge, Charge, Pricing, StopReason

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def run(badge: Badge, until: datetime, *, reprices: dict[datetime, int] | None = None) -> list[Charge]:
    """Drive the meter like the scheduler would, hour by hour, applying price changes on the way."""
    charges, now = [], T0
    pending = sorted((reprices or {}).items())
    while now <= until:
        while pending and pending[0][0] <= now:
            badge.reprice(pending.pop(0)[1], now)
        while (charge := badge.due_charge(now)) is not None:
            charges.append(charge)
        now += timedelta(minutes=30)
    return charges


def started(price: int, weekly_max: int) -> tuple[Badge, Charge]:
    badge = Badge("f1")
    first = badge.start(badge_id="run-1", category="python", weekly_max=weekly_max, price=price, now=T0)
    return badge, first


def test_seven_a_week_charges_one_connect_every_24_hours_starting_at_once() -> None:
    badge, first = started(7, 10)
    charges = [first, *run(badge, T0 + timedelta(days=14) - timedelta(minutes=1))]
    assert [c.due_at for c in charges] == [T0 + timedelta(days=d) for d in range(14)]
    assert [c.seq for c in charges] == list(range(14))
    assert len({c.request_id for c in charges}) == 14


def test_twelve_a_week_charges_every_14_hours() -> None:
    badge, first = started(12, 12)
    charges = [first, *run(badge, T0 + WEEK - timedelta(minutes=1))]
    assert len(charges) == 12
    assert charges[1].due_at - charges[0].due_at == timedelta(hours=14)


def test_a_price_rise_mid_week_brings_the_next_charge_forward() -> None:
    badge, first = started(7, 20)
    change = T0 + timedelta(days=3, hours=6)
    charges = [first, *run(badge, T0 + WEEK - timedelta(minutes=1), reprices={change: 14})]
    due = [c.due_at for c in charges]
    # days 0..3 at 24 h, then 12 h after the last charge (day 3 + 12 h), then every 12 h
    assert due[:4] == [T0 + timedelta(days=d) for d in range(4)]
    assert due[4] == T0 + timedelta(days=3, hours=12)
    assert due[5] - due[4] == timedelta(hours=12)
    assert len(charges) == 4 + 7  # 3.5 d at 12 h after day 3
    assert charges[-1].weekly_price == 14


def test_a_price_fall_pushes_the_next_charge_back() -> None:
    badge, first = started(14, 20)
    charges = [first, *run(badge, T0 + timedelta(days=2), reprices={T0 + timedelta(hours=13): 7})]
    assert [c.due_at for c in charges] == [T0, T0 + timedelta(hours=12), T0 + timedelta(hours=36)]


def test_never_more_than_the_weekly_maximum_in_a_badge_week_whatever_the_price_does() -> None:
    badge, first = started(7, 9)
    changes = {T0 + timedelta(days=1, hours=1): 9, T0 + timedelta(days=2): 8, T0 + timedelta(days=3): 9,
               T0 + timedelta(days=4): 9 - 1, T0 + timedelta(days=5): 9}
    charges = [first, *run(badge, T0 + 3 * WEEK - timedelta(minutes=1), reprices=changes)]
    for week in range(3):
        start = T0 + week * WEEK
        assert sum(c.amount for c in charges if start <= c.due_at < start + WEEK) <= 9
    assert badge.active


def test_a_price_above_the_maximum_switches_the_badge_off() -> None:
    badge, _ = started(7, 10)
    charges = run(badge, T0 + WEEK, reprices={T0 + timedelta(days=2, hours=3): 11})
    assert len(charges) == 2  # day 1 and day 2, nothing after the switch-off
    assert not badge.active and badge.stop_reason is StopReason.PRICE_ABOVE_MAX
    assert badge.due_charge(T0 + 2 * WEEK) is None


def test_a_refused_charge_switches_off_and_does_not_count() -> None:
    badge, _ = started(7, 10)
    charge = badge.due_charge(T0 + timedelta(days=1))
    assert charge is not None and badge.charged_this_week == 2
    badge.charge_refused(charge, T0 + timedelta(days=1))
    assert not badge.active and badge.stop_reason is StopReason.INSUFFICIENT_CONNECTS
    assert badge.charged_this_week == 1


def test_start_refuses_a_price_above_the_maximum_and_a_second_start() -> None:
    with pytest.raises(errors.BadgePriceAboveMax):
        Badge("f1").start(badge_id="r", category="c", weekly_max=6, price=7, now=T0)
    badge, _ = started(7, 7)
    with pytest.raises(errors.BadgeAlreadyActive):
        badge.start(badge_id="r2", category="c", weekly_max=9, price=7, now=T0)
    assert badge.stop(StopReason.USER, T0) and not badge.stop(StopReason.USER, T0)


def test_the_weekly_price_follows_badges_and_searches_deterministically() -> None:
    pricing = Pricing(base_price=7, badges_per_step=10, searches_per_step=1000, min_price=1, max_price=50)
    assert pricing.weekly_price(0, 0) == 7
    assert pricing.weekly_price(25, 0) == 9
    assert pricing.weekly_price(25, 3500) == 12
    assert pricing.weekly_price(10_000, 10**9) == 50
    assert Pricing(base_price=0, min_price=1).weekly_price(0, 0) == 1
