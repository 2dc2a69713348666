"""Billing periods and proration against an exact rational-arithmetic reference.

The reference works in `fractions.Fraction` over seconds with its own calendar
arithmetic; the implementation in integer microseconds. They must agree to the
unit for every month length (28, 29, 30, 31 days: a leap and a common year),
billing days 29, 30 and 31 (and 1 and 15), and every upgrade day of the period.
"""

from __future__ import annotations

import calendar
import math
from datetime import UTC, datetime, timedelta
from fractions import Fraction

import pytest

from services.billing.domain import proration


def reference_period_end(start: datetime, billing_day: int) -> datetime:
    """The next month's billing day, clamped to that month's last day (written independently of add_months)."""
    year, month = (start.year + 1, 1) if start.month == 12 else (start.year, start.month + 1)
    last = calendar.monthrange(year, month)[1]
    return datetime(year, month, min(billing_day, last), start.hour, start.minute, start.second, tzinfo=UTC)


def reference_prorate(amount: int, start: datetime, end: datetime, now: datetime) -> int:
    share = Fraction(int((end - now).total_seconds()), int((end - start).total_seconds()))
    return math.floor(amount * share + Fraction(1, 2))  # round half up


YEARS = (2027, 2028)  # February has 28 days, then 29


@pytest.mark.parametrize("billing_day", [1, 15, 29, 30, 31])
@pytest.mark.parametrize("amount", [90, 1999, 100])
def test_prorated_amounts_match_the_rational_reference_for_every_month_and_day(billing_day, amount):
    checked = 0
    for year in YEARS:
        for month in range(1, 13):
            if billing_day > calendar.monthrange(year, month)[1]:
                continue  # a membership cannot start on a day its first month lacks
            anchor = datetime(year, month, billing_day, 9, 30, tzinfo=UTC)
            start, end = proration.period(anchor, 1)
            assert (start, end) == (anchor, reference_period_end(anchor, billing_day))
            length = (end - start).days
            assert length in (28, 29, 30, 31)
            for day in range(length + 1):
                for hour in (0, 13):
                    now = start + timedelta(days=day, hours=hour)
                    if now > end:
                        continue
                    got = proration.prorate(amount, start=start, end=end, now=now)
                    assert got == reference_prorate(amount, start, end, now), (anchor, now)
                    checked += 1
    assert checked > 600


@pytest.mark.parametrize("billing_day", [29, 30, 31])
def test_renewals_stay_on_the_billing_day_and_clamp_in_short_months(billing_day):
    anchor = datetime(2027, 1, billing_day, tzinfo=UTC)
    ends = [proration.period(anchor, n)[1] for n in range(1, 25)]
    for n, end in enumerate(ends, start=1):
        year, month = divmod(anchor.month - 1 + n, 12)
        year, month = anchor.year + year, month + 1
        assert end == datetime(year, month, min(billing_day, calendar.monthrange(year, month)[1]), tzinfo=UTC)
    starts = [proration.period(anchor, n)[0] for n in range(2, 26)]
    assert starts == ends  # periods tile: no gap, no overlap
    # A 31st anchor returns to the 31st after a short month (no drift to the 28th).
    assert proration.period(datetime(2027, 1, 31, tzinfo=UTC), 3)[1] == datetime(2027, 4, 30, tzinfo=UTC)
    assert proration.period(datetime(2027, 1, 31, tzinfo=UTC), 4)[0] == datetime(2027, 4, 30, tzinfo=UTC)
    assert proration.period(datetime(2027, 1, 31, tzinfo=UTC), 4)[1] == datetime(2027, 5, 31, tzinfo=UTC)


def test_the_whole_period_grants_everything_and_its_end_nothing():
    start, end = proration.period(datetime(2028, 2, 29, tzinfo=UTC), 1)
    assert proration.prorate(90, start=start, end=end, now=start) == 90
    assert proration.prorate(90, start=start, end=end, now=end) == 0
    assert proration.prorate(90, start=start, end=end, now=end + timedelta(days=3)) == 0


def test_half_way_through_a_30_day_period_is_half_rounded_half_up():
    start = datetime(2027, 4, 1, tzinfo=UTC)
    end = proration.period(start, 1)[1]
    assert (end - start).days == 30
    assert proration.prorate(91, start=start, end=end, now=start + timedelta(days=15)) == 46  # 45.5 -> 46
    assert proration.prorate(1999, start=start, end=end, now=start + timedelta(days=15)) == 1000  # 999.5


def test_the_cycle_containing_a_time_is_found_from_the_anchor():
    anchor = datetime(2027, 1, 31, 12, tzinfo=UTC)
    for n in range(1, 30):
        start, end = proration.period(anchor, n)
        assert proration.cycle_at(anchor, start) == n
        assert proration.cycle_at(anchor, end - timedelta(microseconds=1)) == n
