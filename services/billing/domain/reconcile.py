"""Three-way reconciliation: billing's purchases against the ledger's credits and the provider's payments.

Pure Python: the service layer gathers the three sides, this module
classifies every difference. Nothing is corrected here; every difference is
reported.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

COMPLETED, CHARGED_BACK, PENDING = "COMPLETED", "CHARGED_BACK", "PENDING"
CREDITED = (COMPLETED, CHARGED_BACK)


class MismatchKind(enum.StrEnum):
    """billing.proto MismatchKind without its prefix."""

    MISSING_CREDIT = "MISSING_CREDIT"                        # paid (billing or provider) but never credited
    UNKNOWN_CREDIT = "UNKNOWN_CREDIT"                        # credited without a completed purchase
    AMOUNT_DIFFERS = "AMOUNT_DIFFERS"                        # purchase and credit disagree on Connects
    DEFERRED_DIFFERS = "DEFERRED_DIFFERS"                    # unspent purchased Connects disagree
    CREDIT_WITHOUT_PAYMENT = "CREDIT_WITHOUT_PAYMENT"        # credited, but the provider captured nothing
    CHARGEBACK_NOT_CLAWED_BACK = "CHARGEBACK_NOT_CLAWED_BACK"  # the provider reversed it, Connects still there
    PAYMENT_AMOUNT_DIFFERS = "PAYMENT_AMOUNT_DIFFERS"        # captured amount differs from the price


@dataclass(frozen=True)
class Mismatch:
    kind: MismatchKind
    account_id: str = ""
    purchase_id: str = ""
    billing_connects: int = 0
    ledger_connects: int = 0
    billing_cents: int | None = None
    provider_cents: int | None = None


@dataclass(frozen=True)
class Purchase:
    purchase_id: str
    account_id: str
    connects: int
    cents: int
    state: str


@dataclass(frozen=True)
class Credit:
    """A PURCHASE credit the ledger made, and what the books say is left unspent of it."""

    purchase_id: str
    account_id: str
    connects: int
    connects_unspent: int


@dataclass(frozen=True)
class Payment:
    purchase_id: str
    cents: int


@dataclass(frozen=True)
class Reversal:
    purchase_id: str
    cents: int


def compare_purchases(purchases: Iterable[Purchase], credits: Iterable[Credit], payments: Iterable[Payment],
                      reversals: Iterable[Reversal], clawed_back: dict[str, int]) -> list[Mismatch]:
    """Per-purchase differences. `clawed_back`: Connects removed from wallets per purchase (chargebacks).

    A purchase still PENDING is in flight (its credit or capture may be on the way): never a difference.
    """
    by_id = {p.purchase_id: p for p in purchases}
    credited: dict[str, list[Credit]] = {}
    for c in credits:
        credited.setdefault(c.purchase_id, []).append(c)
    paid: dict[str, int] = {}
    for pay in payments:
        paid[pay.purchase_id] = paid.get(pay.purchase_id, 0) + pay.cents
    out: list[Mismatch] = []
    for p in by_id.values():
        if p.state not in CREDITED:
            continue
        got = credited.get(p.purchase_id)
        if not got:
            out.append(Mismatch(MismatchKind.MISSING_CREDIT, p.account_id, p.purchase_id, p.connects, 0))
        elif sum(c.connects for c in got) != p.connects:
            out.append(Mismatch(MismatchKind.AMOUNT_DIFFERS, p.account_id, p.purchase_id, p.connects,
                                sum(c.connects for c in got)))
        if p.purchase_id not in paid:
            out.append(Mismatch(MismatchKind.CREDIT_WITHOUT_PAYMENT, p.account_id, p.purchase_id, p.connects,
                                sum(c.connects for c in got or ()), billing_cents=p.cents, provider_cents=0))
        elif paid[p.purchase_id] != p.cents:
            out.append(Mismatch(MismatchKind.PAYMENT_AMOUNT_DIFFERS, p.account_id, p.purchase_id, p.connects,
                                sum(c.connects for c in got or ()), billing_cents=p.cents,
                                provider_cents=paid[p.purchase_id]))
    for pid, got in credited.items():
        p2 = by_id.get(pid)
        if p2 is None or (p2.state not in CREDITED and p2.state != PENDING):
            out.append(Mismatch(MismatchKind.UNKNOWN_CREDIT, got[0].account_id, pid, 0, sum(c.connects for c in got)))
    for pid, cents in paid.items():
        p3 = by_id.get(pid)
        if p3 is None or (p3.state not in CREDITED and p3.state != PENDING):
            # The provider took money that bought nothing.
            out.append(Mismatch(MismatchKind.MISSING_CREDIT, p3.account_id if p3 else "", pid,
                                p3.connects if p3 else 0, 0, billing_cents=p3.cents if p3 else 0,
                                provider_cents=cents))
    reversed_ids = {r.purchase_id for r in reversals}
    for pid in sorted(reversed_ids):
        p4 = by_id.get(pid)
        got = credited.get(pid, [])
        unspent = sum(c.connects_unspent for c in got)
        if (p4 is not None and p4.state != CHARGED_BACK) or (unspent > 0 and not clawed_back.get(pid)):
            out.append(Mismatch(MismatchKind.CHARGEBACK_NOT_CLAWED_BACK, p4.account_id if p4 else "", pid,
                                unspent, clawed_back.get(pid, 0)))
    return out


@dataclass(frozen=True)
class LedgerSide:
    """What the ledger's totals say about purchased Connects, from the beginning to the cut-off."""

    purchased: int     # Connects issued from PURCHASE
    unspent: int       # issued - spent - expired + returned - clawed back, of PURCHASE origin


def compare_totals(credited: int, billing_unspent: int, ledger: LedgerSide) -> list[Mismatch]:
    """System-wide differences (no account): `credited` is the purchased Connects of the credits billing
    consumed, `billing_unspent` its deferred Connects."""
    out = []
    if credited != ledger.purchased:
        out.append(Mismatch(MismatchKind.AMOUNT_DIFFERS, billing_connects=credited, ledger_connects=ledger.purchased))
    if billing_unspent != ledger.unspent:
        out.append(Mismatch(MismatchKind.DEFERRED_DIFFERS, billing_connects=billing_unspent,
                            ledger_connects=ledger.unspent))
    return out
