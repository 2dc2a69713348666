"""Read-side use cases: balances and paginated history."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import datetime

from services.connects.domain.commands import check_id, check_page_size
from services.connects.domain.model import LedgerTransaction, Lot, Wallet
from services.connects.service_layer.unit_of_work import AbstractLedgerQueries
from services.kit.errors import InvalidArgument


@dataclass(frozen=True)
class Balance:
    account_id: str
    available: int
    held: int
    lots: list[Lot]
    expiring_within_30_days: int


@dataclass(frozen=True)
class TransactionPage:
    transactions: list[LedgerTransaction]
    next_page_token: str


def get_balance(queries: AbstractLedgerQueries, account_id: str, now: datetime) -> Balance:
    """Connects past their date are not available even before their EXPIRE entry is written."""
    check_id("account_id", account_id)
    wallet = Wallet.restore(account_id, queries.lots(account_id))
    lots = [lot for lot in wallet.live_lots() if lot.held or not lot.is_due(now)]
    return Balance(account_id, wallet.available_at(now), wallet.held, lots, wallet.expiring_within(now))


def encode_page_token(account_id: str, before_sequence: int) -> str:
    raw = json.dumps({"a": account_id, "s": before_sequence}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_page_token(account_id: str, token: str) -> int | None:
    if not token:
        return None
    try:
        body = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        before, owner = body["s"], body["a"]
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise InvalidArgument("INVALID_PAGE_TOKEN", "page_token is not valid", field="page_token") from None
    if owner != account_id or not isinstance(before, int) or isinstance(before, bool) or before < 1:
        raise InvalidArgument("INVALID_PAGE_TOKEN", "page_token is not valid for this request",
                              field="page_token")
    return before


def list_transactions(queries: AbstractLedgerQueries, account_id: str, page_size: int,
                      page_token: str) -> TransactionPage:
    check_id("account_id", account_id)
    size = check_page_size(page_size)
    before = decode_page_token(account_id, page_token)
    rows = queries.transactions(account_id, before, size + 1)
    page = rows[:size]
    more = len(rows) > size
    return TransactionPage(page, encode_page_token(account_id, page[-1].sequence) if more else "")
