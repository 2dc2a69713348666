"""Read-side use cases: balances and paginated history."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from services.connects.domain import errors
from services.connects.domain.commands import check_id, check_page_size
from services.connects.domain.model import LedgerTransaction, Lot, Wallet
from services.connects.service_layer.totals import LedgerTotals
from services.connects.service_layer.unit_of_work import AbstractLedgerQueries
from services.kit.errors import InvalidArgument


@dataclass(frozen=True)
class Balance:
    account_id: str
    available: int
    held: int
    lots: list[Lot]
    expiring_within_30_days: int
    held_expiring_within_30_days: int


@dataclass(frozen=True)
class TransactionPage:
    transactions: list[LedgerTransaction]
    next_page_token: str


def get_balance(queries: AbstractLedgerQueries, account_id: str, now: datetime) -> Balance:
    """Connects past their date are not available even before their EXPIRE entry is written.

    A lot past its date is listed only while open holds reserve part of it, with remaining 0: what is
    left in it is not available (its EXPIRE entry takes it), and what the holds give back expires too.
    """
    check_id("account_id", account_id)
    wallet = Wallet.restore(account_id, queries.lots(account_id))
    lots = [replace(lot, remaining=0) if lot.is_due(now) else lot
            for lot in wallet.live_lots() if lot.held or not lot.is_due(now)]
    return Balance(account_id, wallet.available_at(now), wallet.held, lots, wallet.expiring_within(now),
                   wallet.held_expiring_within(now))


def get_ledger_totals(queries: AbstractLedgerQueries, start: datetime | None, end: datetime | None) -> LedgerTotals:
    """The journal's totals for [start, end) (see LedgerTotals); TOTAL_OUT_OF_RANGE for a sum past int64."""
    if start is None:
        raise InvalidArgument("INVALID_FIELD", "start_time is required", field="start_time")
    if end is None:
        raise InvalidArgument("INVALID_FIELD", "end_time is required", field="end_time")
    if end < start:
        raise InvalidArgument("INVALID_FIELD", "end_time must not be before start_time", field="end_time")
    totals = queries.ledger_totals(start.astimezone(UTC), end.astimezone(UTC))
    if too_large := totals.out_of_int64():
        raise errors.TotalOutOfRange(too_large[0][0])
    return totals


# Page tokens are opaque to clients: `v1.<account tag>.<sequence>`. The tag ties a token to the account it
# pages (AIP-158: a token is only valid for the request that produced it); the sequence is where the next
# page starts (exclusive). Nothing is decoded but a short ASCII string, and the sequence must fit the
# journal's int64 column, so a tampered token can only ever be INVALID_PAGE_TOKEN. Tokens are not signed:
# changing the sequence of a well-formed token only moves the cursor within the same account's history,
# which the caller may read anyway.
PAGE_TOKEN_VERSION = "v1"  # noqa: S105 - a format tag, not a secret
MAX_SEQUENCE = 2**63 - 1
MAX_PAGE_TOKEN_LEN = 64
_PAGE_TOKEN = re.compile(r"v1\.([A-Za-z0-9_-]{16})\.([1-9][0-9]{0,18})", re.ASCII)


def _account_tag(account_id: str) -> str:
    digest = hashlib.sha256(account_id.encode("utf-8", "surrogatepass")).digest()
    return base64.urlsafe_b64encode(digest[:12]).decode()


def encode_page_token(account_id: str, before_sequence: int) -> str:
    return f"{PAGE_TOKEN_VERSION}.{_account_tag(account_id)}.{before_sequence}"


def _invalid_page_token(why: str) -> InvalidArgument:
    return InvalidArgument("INVALID_PAGE_TOKEN", f"page_token {why}", field="page_token")


def decode_page_token(account_id: str, token: str) -> int | None:
    """The sequence a page token starts before, or INVALID_PAGE_TOKEN for anything not made by us for
    this account."""
    if not token:
        return None
    if len(token) > MAX_PAGE_TOKEN_LEN:  # checked before anything else looks at it
        raise _invalid_page_token("is not valid")
    match = _PAGE_TOKEN.fullmatch(token)
    if match is None:
        raise _invalid_page_token("is not valid")
    tag, sequence = match.group(1), int(match.group(2))
    if not hmac.compare_digest(tag, _account_tag(account_id)):
        raise _invalid_page_token("is not valid for this request")
    if sequence > MAX_SEQUENCE:
        raise _invalid_page_token("is not valid")
    return sequence


def list_transactions(queries: AbstractLedgerQueries, account_id: str, page_size: int,
                      page_token: str) -> TransactionPage:
    check_id("account_id", account_id)
    size = check_page_size(page_size)
    before = decode_page_token(account_id, page_token)
    rows = queries.transactions(account_id, before, size + 1)
    page = rows[:size]
    more = len(rows) > size
    return TransactionPage(page, encode_page_token(account_id, page[-1].sequence) if more else "")
