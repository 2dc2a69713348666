"""Read ports over billing's money-in records, for the books (revenue reports, statements, reconciliation).

The purchases side owns the `purchases`, `chargebacks` and `membership_cycles`
tables (services/billing/adapters/tables.py); the books read them only through
`PurchaseLookup` (or, for set-based work, the same tables in SQL).

Reference conventions (what the ledger sees, so the books can join on it):

- A purchase's Connects credit: source PURCHASE, request_id
  `billing:purchase:<purchase_id>:credit`, reference `purchase:<purchase_id>`;
  its ledger transaction id is `PurchaseRecord.credit_transaction_id`.
- A membership cycle's grant: source PLAN_GRANT, request_id
  `billing:membership:<membership_id>:cycle:<n>:credit` (an upgrade's prorated
  grant `...:cycle:<n>:upgrade:credit`), reference
  `membership:<membership_id>/cycle:<n>` (upgrade: `.../upgrade`).
- A chargeback's clawback: ConnectsService.ReverseCredit of the purchase's credit,
  request_id `billing:chargeback:<chargeback_id>:reverse`; the ledger records a
  REVERSAL transaction (wallet -> system:sales) of `connects_removed`, and
  `connects_already_spent` is billing's loss (`loss_cents`).

Times are timezone-aware UTC. Money is integer cents with its currency.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime


def purchase_credit_request_id(purchase_id: str) -> str:
    return f"billing:purchase:{purchase_id}:credit"


def purchase_reference(purchase_id: str) -> str:
    return f"purchase:{purchase_id}"


def cycle_credit_request_id(membership_id: str, cycle: int, kind: str = "RENEWAL") -> str:
    suffix = ":upgrade" if kind == "UPGRADE" else ""
    return f"billing:membership:{membership_id}:cycle:{cycle}{suffix}:credit"


def cycle_reference(membership_id: str, cycle: int, kind: str = "RENEWAL") -> str:
    suffix = "/upgrade" if kind == "UPGRADE" else ""
    return f"membership:{membership_id}/cycle:{cycle}{suffix}"


def chargeback_reverse_request_id(chargeback_id: str) -> str:
    return f"billing:chargeback:{chargeback_id}:reverse"


@dataclass(frozen=True)
class PurchaseRecord:
    """One purchase as stored. `state`: PENDING, COMPLETED, FAILED or CHARGED_BACK (credited, then reversed)."""

    purchase_id: str
    account_id: str
    bundle_id: str
    connects: int
    amount_cents: int
    currency: str
    state: str
    payment_status: str
    payment_intent_id: str
    payment_reference: str
    credit_request_id: str
    credit_transaction_id: str
    failure_reason: str
    created_at: datetime
    captured_at: datetime | None
    finished_at: datetime | None

    @property
    def credited(self) -> bool:
        """True once its Connects reached the ledger (COMPLETED, or CHARGED_BACK after that)."""
        return bool(self.credit_transaction_id)


@dataclass(frozen=True)
class ChargebackRecord:
    """A recorded payment reversal. `state` RECORDED once the ledger confirmed the clawback; PENDING before."""

    chargeback_id: str
    purchase_id: str
    account_id: str
    amount_cents: int
    currency: str
    connects: int
    connects_removed: int
    connects_already_spent: int
    loss_cents: int
    provider_reference: str
    state: str
    reversal_transaction_id: str
    created_at: datetime
    recorded_at: datetime | None


@dataclass(frozen=True)
class MembershipPaymentRecord:
    """A membership cycle's grant and fee (fee 0 on BASIC). `state`: PENDING, GRANTED or FAILED."""

    membership_id: str
    account_id: str
    cycle: int
    kind: str
    plan: str
    period_start: datetime
    period_end: datetime
    fee_cents: int
    currency: str
    connects: int
    state: str
    payment_reference: str
    credit_transaction_id: str
    paid_at: datetime | None
    finished_at: datetime | None


class PurchaseLookup(abc.ABC):
    """What the books may read of purchases, chargebacks and membership payments (read-only)."""

    @abc.abstractmethod
    def by_id(self, purchase_id: str) -> PurchaseRecord | None:
        """The purchase, or None if billing never took it."""

    @abc.abstractmethod
    def between(self, start: datetime, end: datetime) -> list[PurchaseRecord]:
        """Purchases credited to the ledger with `finished_at` in [start, end) (COMPLETED or CHARGED_BACK),
        oldest first: the cash received for Connects in the period."""

    @abc.abstractmethod
    def credited(self, *, batch_size: int = 10_000) -> Iterator[PurchaseRecord]:
        """Every purchase ever credited, in purchase_id order, streamed (for reconciliation)."""

    @abc.abstractmethod
    def chargebacks_between(self, start: datetime, end: datetime) -> list[ChargebackRecord]:
        """Chargebacks RECORDED (clawback confirmed) with `recorded_at` in [start, end): their removed Connects
        and losses."""

    @abc.abstractmethod
    def chargeback_for(self, purchase_id: str) -> ChargebackRecord | None:
        """The purchase's chargeback (recorded or pending), if any."""

    @abc.abstractmethod
    def membership_payments_between(self, start: datetime, end: datetime) -> list[MembershipPaymentRecord]:
        """Membership cycles GRANTED with `finished_at` in [start, end): fees received and Connects granted."""
