"""GetRevenueReport and GetStatement: read models over the revenue journal, to the cent."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import Engine

from services.billing.adapters.revenue_repository import BooksRepository, utc
from services.billing.domain.revenue import PURCHASE, REVERSE_CREDIT, EntryKind, Product
from services.billing.service_layer.ports import PurchaseLookup
from services.kit.errors import InvalidArgument, require

MAX_STATEMENT_PERIOD = timedelta(days=366)

@dataclass
class RevenueReport:
    start: datetime
    end: datetime
    deferred_opening: int = 0
    cash_received: int = 0
    recognised: dict[Product, tuple[int, int]] = field(default_factory=dict)  # (Connects, cents), net of returns
    breakage_connects: int = 0
    breakage: int = 0
    chargeback_reversed: int = 0
    chargeback_loss: int = 0
    deferred_closing: int = 0
    membership_fees: int = 0

    @property
    def recognised_total(self) -> int:
        return sum(cents for _, cents in self.recognised.values())


def check_period(start: datetime | None, end: datetime | None) -> tuple[datetime, datetime]:
    require(start is not None, "start_time", "is required")
    require(end is not None, "end_time", "is required")
    assert start is not None and end is not None
    require(end > start, "end_time", "must be after start_time")
    return start, end


def revenue_report(engine: Engine, purchases: PurchaseLookup, start: datetime, end: datetime) -> RevenueReport:
    """Revenue of [start, end): the journal's sums, and deferred revenue at both ends."""
    # A chargeback of a purchase whose Connects were all spent claws nothing back: no ledger transaction,
    # so its loss (the whole price) comes from billing's chargeback record.
    unclawed_loss = sum(c.loss_cents for c in purchases.chargebacks_between(start, end)
                        if not c.reversal_transaction_id)
    fees = sum(m.fee_cents for m in purchases.membership_payments_between(start, end))
    with engine.connect() as conn:
        repo = BooksRepository(conn)
        opening = repo.deferred(start)[1]
        totals = repo.totals_by_kind(start, end)
        closing = repo.deferred(end)[1]
    report = RevenueReport(start, end, deferred_opening=opening, deferred_closing=closing,
                           chargeback_loss=unclawed_loss, membership_fees=fees)
    for t in totals:
        if t.kind is EntryKind.CASH:
            report.cash_received += t.cents
        elif t.kind in (EntryKind.RECOGNISED, EntryKind.RETURNED) and t.product is not None:
            sign = 1 if t.kind is EntryKind.RECOGNISED else -1
            c, v = report.recognised.get(t.product, (0, 0))
            report.recognised[t.product] = (c + sign * t.connects, v + sign * t.cents)
        elif t.kind is EntryKind.BREAKAGE:
            report.breakage_connects += t.connects
            report.breakage += t.cents
        elif t.kind is EntryKind.REVERSED:
            report.chargeback_reversed += t.cents
        elif t.kind is EntryKind.LOSS:
            report.chargeback_loss += t.cents
        # RETURNED lines of Connects never recognised by billing (product unknown) only move deferred.
    return report


@dataclass(frozen=True)
class StatementLine:
    occurred_at: datetime
    kind: str            # StatementLineKind without its prefix
    connects_delta: int
    cents: int | None    # money paid or returned; None when the line has none
    product: Product | None
    reference: str


@dataclass
class Statement:
    account_id: str
    start: datetime
    end: datetime
    opening_connects: int
    closing_connects: int
    lines: list[StatementLine]
    purchases_total: int
    membership_fees_total: int


_CREDIT_LINE = {PURCHASE: "PURCHASE", "PLAN_GRANT": "PLAN_GRANT", "BONUS": "BONUS"}
_PRODUCT = {"PROPOSAL": Product.PROPOSALS, "BOOST": Product.BOOSTS, "BADGE": Product.BADGE,
            "PROMOTED_PROFILE": Product.PROMOTED_PROFILES}


def _line(row: Any) -> StatementLine | None:
    kind, at = row.kind, utc(row.occurred_at)
    if kind == "CREDIT":
        return StatementLine(at, _CREDIT_LINE.get(row.source_or_reason, "BONUS"), row.amount,
                             row.cents if row.source_or_reason == PURCHASE else None, None, row.reference)
    if kind in ("SPEND", "CAPTURE"):
        return StatementLine(at, "SPEND", -row.amount, None, _PRODUCT.get(row.source_or_reason), row.reference)
    if kind == "RETURN":
        return StatementLine(at, "RETURN", row.amount, None, None, row.reference)
    if kind == "EXPIRE":
        return StatementLine(at, "EXPIRY", -row.amount, None, None, row.transaction_id)
    if kind == REVERSE_CREDIT:
        return StatementLine(at, "CHARGEBACK", -row.amount, row.cents, None, row.reference)
    return None  # HOLD and RELEASE leave the balance (available + held) unchanged


def statement(engine: Engine, purchases: PurchaseLookup, account_id: str, start: datetime,
              end: datetime) -> Statement:
    """An account's movements in [start, end); balances are available + held Connects."""
    require(bool(account_id), "account_id", "is required")
    if end - start > MAX_STATEMENT_PERIOD:
        raise InvalidArgument("STATEMENT_PERIOD_TOO_LONG", "a statement covers at most 366 days",
                              field="end_time")
    fees = [m for m in purchases.membership_payments_between(start, end) if m.account_id == account_id and m.fee_cents]
    with engine.connect() as conn:
        repo = BooksRepository(conn)
        opening = repo.balance_before(account_id, start)
        rows = repo.account_transactions(account_id, start, end)
    lines = [line for line in (_line(r) for r in rows) if line is not None]
    lines.extend(StatementLine(m.paid_at or m.finished_at or m.period_start, "MEMBERSHIP_FEE", 0, m.fee_cents, None,
                               m.payment_reference) for m in fees)
    # A chargeback that clawed nothing back (every Connect already spent) has no ledger line: billing's record.
    lines.extend(StatementLine(c.recorded_at or c.created_at, "CHARGEBACK", 0, c.amount_cents, None, c.purchase_id)
                 for c in purchases.chargebacks_between(start, end)
                 if c.account_id == account_id and not c.reversal_transaction_id)
    lines.sort(key=lambda x: x.occurred_at)
    closing = int(rows[-1].balance_after) if rows else opening
    return Statement(account_id, start, end, opening, closing, lines,
                     purchases_total=sum(x.cents or 0 for x in lines if x.kind == "PURCHASE"),
                     membership_fees_total=sum(m.fee_cents for m in fees))
