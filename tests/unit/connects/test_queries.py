"""Balance and history queries (service layer on the fakes and on SQLite): page tokens, the lots a balance
shows, the 30-day expiring view."""

from __future__ import annotations

from datetime import timedelta

import pytest

from services.connects.adapters.repository import SqlAlchemyLedgerQueries
from services.connects.domain import commands as c
from services.connects.domain.model import SpendReason
from services.connects.service_layer import queries
from services.kit.errors import InvalidArgument
from tests.conftest import unique
from tests.unit.connects.conftest import NOW, YEAR, credit, ok, run, sql_run
from tests.unit.connects.fakes import FakeLedgerStore

ACCOUNT = "acct-pages"
GOOD = queries.encode_page_token(ACCOUNT, 2)
TAG = GOOD.split(".")[1]
# Every variant is refused; each would be read as a cursor if the check it names were missing.
TAMPERED = {
    "suffix": GOOD + "x", "trailing space": GOOD + " ", "upper case": GOOD.upper(), "other version": "v2" + GOOD[2:],
    "other tag": GOOD.replace(TAG, TAG[::-1]), "another account's token": queries.encode_page_token("acct-other", 2),
    "zero": f"v1.{TAG}.0", "negative": f"v1.{TAG}.-1", "leading zero": f"v1.{TAG}.01",
    "underscore digits": f"v1.{TAG}.1_000", "plus sign": f"v1.{TAG}.+5", "non-ASCII digit": f"v1.{TAG}.\u0661",
    "two sequences": f"v1.{TAG}.5.5", "no sequence": f"v1.{TAG}", "20 digits": f"v1.{TAG}.{10**19}",
    "oversized": "v1." + "A" * 100_000, "not a token": "%%%",
}


def test_page_tokens_are_short_opaque_strings_that_page_newest_first():
    store, acct = FakeLedgerStore(), unique("a")
    run(store, *(credit(acct, 1) for _ in range(3)))
    page = queries.list_transactions(store, acct, 1, "")
    good = page.next_page_token
    assert good == queries.encode_page_token(acct, 3)
    assert len(good) <= queries.MAX_PAGE_TOKEN_LEN
    assert [t.sequence for t in queries.list_transactions(store, acct, 5, good).transactions] == [2, 1]


@pytest.mark.parametrize("bad", list(TAMPERED.values()), ids=list(TAMPERED))
def test_a_changed_page_token_is_invalid_argument(bad):
    store = FakeLedgerStore()
    run(store, *(credit(ACCOUNT, 1) for _ in range(3)))
    assert queries.list_transactions(store, ACCOUNT, 5, GOOD).transactions, "the untouched token pages"
    with pytest.raises(InvalidArgument) as exc:
        queries.list_transactions(store, ACCOUNT, 5, bad)
    assert (exc.value.reason, exc.value.metadata["field"]) == ("INVALID_PAGE_TOKEN", "page_token")


@pytest.mark.parametrize("sequence", [2**63, 2**63 + 1, 10**19 - 1])
def test_a_well_formed_page_token_with_a_sequence_past_int64_is_invalid_argument(sqlite_engine, sequence):
    """The token has the current format (19 digits fit it): only the int64 bound refuses it."""
    acct = unique("a")
    ok(sql_run(sqlite_engine, credit(acct, 5))[0])
    qs = SqlAlchemyLedgerQueries(sqlite_engine)
    with pytest.raises(InvalidArgument) as exc:
        queries.list_transactions(qs, acct, 10, queries.encode_page_token(acct, sequence))
    assert exc.value.reason == "INVALID_PAGE_TOKEN"
    last = queries.list_transactions(qs, acct, 10, queries.encode_page_token(acct, 2**63 - 1))
    assert [t.sequence for t in last.transactions] == [1]


def test_balance_lots_never_show_connects_past_their_date_as_remaining():
    store, acct = FakeLedgerStore(), unique("a")
    ok(run(store, credit(acct, 10), now=NOW)[0])
    # A 90-day hold placed a month before the lot's date outlives the lot.
    ok(run(store, c.PlaceHold(unique("r"), acct, 4, SpendReason.PROPOSAL, ttl=timedelta(days=90)),
           now=NOW + YEAR - timedelta(days=30))[0])
    later = NOW + YEAR + timedelta(days=1)  # the lot is due; the sweeper has not run yet
    balance = queries.get_balance(store, acct, later)
    assert (balance.available, balance.held) == (0, 4)
    # Lot.remaining is documented as "Connects still available in this lot".
    assert sum(lot.remaining for lot in balance.lots) == balance.available


def test_balance_of_an_unknown_account_is_zero_and_page_of_an_unknown_account_is_empty():
    store = FakeLedgerStore()
    b = queries.get_balance(store, unique("nobody"), NOW)
    assert (b.available, b.held, b.lots, b.expiring_within_30_days) == (0, 0, [], 0)
    page = queries.list_transactions(store, unique("nobody"), 10, "")
    assert (page.transactions, page.next_page_token) == ([], "")


def test_expiring_within_30_days_counts_due_window_only_and_balance_equals_lots(sqlite_engine):
    acct = unique("a")
    ok(sql_run(sqlite_engine, credit(acct, 7), now=NOW - YEAR + timedelta(days=10))[0])  # expires in 10 days
    ok(sql_run(sqlite_engine, credit(acct, 5), now=NOW - YEAR + timedelta(days=30))[0])  # exactly at +30 days
    ok(sql_run(sqlite_engine, credit(acct, 3), now=NOW - YEAR + timedelta(days=31))[0])  # in 31 days
    ok(sql_run(sqlite_engine, credit(acct, 2), now=NOW - YEAR)[0])  # due right now
    ok(sql_run(sqlite_engine, c.PlaceHold(unique("r"), acct, 4, SpendReason.PROPOSAL))[0])  # from the 7-lot
    b = queries.get_balance(SqlAlchemyLedgerQueries(sqlite_engine), acct, NOW)
    assert b.expiring_within_30_days == 3 + 5
    assert (b.available, b.held) == (3 + 5 + 3, 4)
    assert sum(lot.remaining for lot in b.lots) == b.available
    assert sum(lot.held for lot in b.lots) == b.held
