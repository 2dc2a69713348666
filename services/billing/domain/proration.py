"""Monthly billing periods and proration (pure, integer arithmetic).

A membership's periods are anchored at its start: cycle n runs from the
anchor plus n-1 months to the anchor plus n months, at the anchor's time of
day, on the anchor's day of the month, or the month's last day when it is
shorter (a membership started on the 31st renews on 30 April, 28/29
February). A mid-cycle change is prorated with the whole period as the
denominator: amount * (period_end - now) / (period_end - period_start), in
microseconds, rounded half up to a whole unit (cent or Connect).
"""

from __future__ import annotations

import calendar
from datetime import datetime, timedelta

_US = timedelta(microseconds=1)


def add_months(anchor: datetime, months: int) -> datetime:
    """`anchor` moved by `months` calendar months, the day clamped to the target month's length."""
    index = anchor.year * 12 + (anchor.month - 1) + months
    year, month = divmod(index, 12)
    month += 1
    day = min(anchor.day, calendar.monthrange(year, month)[1])
    return anchor.replace(year=year, month=month, day=day)


def period(anchor: datetime, cycle: int) -> tuple[datetime, datetime]:
    """[start, end) of cycle `cycle` (1, 2, ...) of a membership anchored at `anchor`."""
    if cycle < 1:
        raise ValueError("cycles count from 1")
    return add_months(anchor, cycle - 1), add_months(anchor, cycle)


def cycle_at(anchor: datetime, now: datetime) -> int:
    """The cycle whose period contains `now` (1 for any time before the anchor's first renewal)."""
    cycle = max(1, (now.year - anchor.year) * 12 + now.month - anchor.month)
    while cycle > 1 and period(anchor, cycle)[0] > now:
        cycle -= 1
    while period(anchor, cycle)[1] <= now:
        cycle += 1
    return cycle


def prorate(amount: int, *, start: datetime, end: datetime, now: datetime) -> int:
    """The part of `amount` for what is left of [start, end) at `now`, rounded half up (0 after the end)."""
    if end <= start:
        raise ValueError("empty period")
    remaining = min(max(end - now, timedelta(0)), end - start) // _US
    whole = (end - start) // _US
    return (2 * amount * remaining + whole) // (2 * whole)
