"""GetBalance's 30-day view: available and held Connects expiring soon, apart."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.connects.domain import commands as c
from services.connects.domain.model import LotSource, SpendReason
from services.connects.service_layer import handlers, queries
from services.connects.service_layer.handlers import Envelope
from tests.conftest import unique
from tests.unit.connects.fakes import FakeLedgerStore

NOW = datetime(2026, 3, 1, tzinfo=UTC)
DAY = timedelta(days=1)


def ok(store, cmd, at, caller="tests"):
    (out,) = handlers.execute(store.uow(), [Envelope(cmd, caller)], at)
    assert out.error is None, out.error
    return out.receipt


def test_held_connects_expiring_within_30_days_are_shown_apart_from_the_available_ones():
    store, acct = FakeLedgerStore(), unique("a")
    ok(store, c.Credit(unique("r"), acct, 10, LotSource.BONUS), NOW - 350 * DAY)  # expires in 15 days
    ok(store, c.Credit(unique("r"), acct, 20, LotSource.BONUS), NOW - 334 * DAY)  # in 31 days: not soon
    ok(store, c.Credit(unique("r"), acct, 7, LotSource.BONUS), NOW - 200 * DAY)
    hold = ok(store, c.PlaceHold(unique("r"), acct, 4, SpendReason.PROPOSAL, ttl=timedelta(days=60)), NOW)
    ok(store, c.IncreaseHold(unique("r"), hold.hold_id, 13), NOW)  # 10 from the first lot, 3 from the second
    b = queries.get_balance(store, acct, NOW)
    assert (b.available, b.held) == (24, 13)
    assert (b.expiring_within_30_days, b.held_expiring_within_30_days) == (0, 10)
    later = queries.get_balance(store, acct, NOW + 2 * DAY)  # the second lot now expires within 30 days too
    assert (later.expiring_within_30_days, later.held_expiring_within_30_days) == (17, 13)
    past = queries.get_balance(store, acct, NOW + 20 * DAY)  # the first lot is past its date, still held
    assert (past.available, past.held, past.held_expiring_within_30_days) == (24, 13, 13)
