"""The badge through its use cases and the meter: what the ledger is charged, and when."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa

from services.ads.adapters.tables import badge_charges
from services.ads.domain import errors
from services.ads.domain.badge import Pricing
from services.ads.service_layer import badges
from services.ads.service_layer.badges import BadgeSettings
from services.ads.service_layer.unit_of_work import AdsUnitOfWork, NoSearches, SearchCounter
from services.kit.errors import AlreadyExists, FailedPrecondition, InvalidArgument
from tests.conftest import unique
from tests.unit.ads.fakes import Clock, FakeConnects

SETTINGS = BadgeSettings(pricing=Pricing(base_price=7, badges_per_step=10, searches_per_step=100, max_price=50))


class Searches(SearchCounter):
    def __init__(self) -> None:
        self.count = 0

    def searches(self, uow: AdsUnitOfWork, category: str, since: datetime, until: datetime) -> int:
        return self.count


def start(uow_factory, ledger: FakeConnects, clock: Clock, freelancer: str, weekly_max: int,
          searches: SearchCounter | None = None, request_id: str | None = None):  # type: ignore[no-untyped-def]
    return badges.start_badge(uow_factory, ledger, request_id or unique("rq"), freelancer, "python", weekly_max,
                              clock(), SETTINGS, searches or NoSearches())


def meter(uow_factory, ledger: FakeConnects, clock: Clock, until: datetime, searches: SearchCounter | None = None,
          step: timedelta = timedelta(hours=1)) -> None:  # type: ignore[no-untyped-def]
    while clock() + step <= until:
        clock.advance(seconds=step.total_seconds())
        badges.reprice(uow_factory, clock(), SETTINGS.pricing, searches or NoSearches())
        badges.issue_due_charges(uow_factory, clock())
        while badges.run_due_charges(uow_factory, ledger, clock):
            pass


def test_starting_the_badge_charges_the_first_connect_at_once(uow_factory, ledger, clock) -> None:
    ledger.fund("f1", 20)
    view = start(uow_factory, ledger, clock, "f1", 10, request_id="rq-start")
    assert view.state == "ACTIVE" and view.current_weekly_price_connects == 7
    assert view.charge_interval == timedelta(days=1) and view.next_charge_at == clock() + timedelta(days=1)
    assert ledger.spent["f1"] == 1 and view.charged_this_week_connects == 1
    assert start(uow_factory, ledger, clock, "f1", 10, request_id="rq-start").state == "ACTIVE"  # replay
    assert ledger.spent["f1"] == 1
    with pytest.raises(AlreadyExists):
        start(uow_factory, ledger, clock, "f1", 11, request_id="rq-start")
    with pytest.raises(errors.BadgeAlreadyActive):
        start(uow_factory, ledger, clock, "f1", 10)


def test_a_week_at_seven_charges_seven_connects_one_a_day(uow_factory, ledger, clock) -> None:
    ledger.fund("f1", 50)
    t0 = clock()
    start(uow_factory, ledger, clock, "f1", 10)
    meter(uow_factory, ledger, clock, t0 + timedelta(days=7) - timedelta(minutes=1))
    assert ledger.spent["f1"] == 7
    meter(uow_factory, ledger, clock, t0 + timedelta(days=14) - timedelta(minutes=1))
    assert ledger.spent["f1"] == 14
    spends = [rid for method, rid in ledger.calls if method == "spend"]
    assert len(spends) == len(set(spends)) == 14


def test_more_demand_raises_the_price_retimes_charges_and_the_weekly_max_holds(uow_factory, ledger, clock) -> None:
    ledger.fund("f1", 100)
    searches = Searches()
    t0 = clock()
    start(uow_factory, ledger, clock, "f1", 12, searches)
    meter(uow_factory, ledger, clock, t0 + timedelta(days=2, minutes=30), searches)
    assert ledger.spent["f1"] == 3  # day 0, 1, 2
    searches.count = 500  # price 7 + 5 = 12: one every 14 h
    meter(uow_factory, ledger, clock, t0 + timedelta(days=7) - timedelta(minutes=1), searches)
    view = badges.get_badge(uow_factory, "f1", "", SETTINGS, searches, clock())
    assert view.current_weekly_price_connects == 12 and view.charge_interval == timedelta(hours=14)
    assert 3 < ledger.spent["f1"] <= 12
    with uow_factory() as uow:
        due = [row.due_at for row in uow.conn.execute(sa.select(badge_charges.c.due_at)
                                                       .order_by(badge_charges.c.seq))]
    assert due[3] - due[2] == timedelta(hours=14)  # re-timed from the last charge


def test_a_price_above_the_maximum_switches_the_badge_off(uow_factory, ledger, clock) -> None:
    ledger.fund("f1", 100)
    searches = Searches()
    start(uow_factory, ledger, clock, "f1", 8, searches)
    searches.count = 200  # price 9 > 8
    meter(uow_factory, ledger, clock, clock() + timedelta(days=3), searches)
    view = badges.get_badge(uow_factory, "f1", "", SETTINGS, searches, clock())
    assert view.state == "INACTIVE" and view.stop_reason == "PRICE_ABOVE_MAX"
    assert ledger.spent["f1"] == 1


def test_an_empty_wallet_switches_the_badge_off_and_start_is_refused_with_nothing_charged(
        uow_factory, ledger, clock) -> None:
    ledger.fund("f1", 2)
    start(uow_factory, ledger, clock, "f1", 10)
    meter(uow_factory, ledger, clock, clock() + timedelta(days=3))
    assert ledger.spent["f1"] == 2
    view = badges.get_badge(uow_factory, "f1", "", SETTINGS, NoSearches(), clock())
    assert view.state == "INACTIVE" and view.stop_reason == "INSUFFICIENT_CONNECTS"
    with pytest.raises(FailedPrecondition) as refused:
        start(uow_factory, ledger, clock, "f1", 10)
    assert refused.value.reason == "INSUFFICIENT_CONNECTS"
    assert badges.get_badge(uow_factory, "f1", "", SETTINGS, NoSearches(), clock()).state == "INACTIVE"


def test_start_refuses_a_maximum_below_the_price_and_bad_input(uow_factory, ledger, clock) -> None:
    ledger.fund("f1", 10)
    with pytest.raises(errors.BadgePriceAboveMax):
        start(uow_factory, ledger, clock, "f1", 6)
    for weekly_max in (0, -1, 10**9):
        with pytest.raises(InvalidArgument):
            start(uow_factory, ledger, clock, "f1", weekly_max)
    assert ledger.calls == []


def test_stopping_ends_the_charges(uow_factory, ledger, clock) -> None:
    ledger.fund("f1", 50)
    start(uow_factory, ledger, clock, "f1", 10)
    view = badges.stop_badge(uow_factory, unique("rq"), "f1", clock(), SETTINGS, NoSearches())
    assert view.state == "INACTIVE" and view.stop_reason == "USER" and view.next_charge_at is None
    meter(uow_factory, ledger, clock, clock() + timedelta(days=3))
    assert ledger.spent["f1"] == 1
