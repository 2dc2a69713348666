"""A purchase of Connects and its state machine (pure).

    PENDING --captured + credited--> COMPLETED --chargeback--> CHARGED_BACK
    PENDING --declined-------------> FAILED

A purchase is PENDING until its payment is captured and its Connects credited
(COMPLETED), or its payment fails (FAILED). COMPLETED and FAILED never change
into each other: a provider event that arrives after the purchase reached a
terminal state is recorded by the caller and not applied (`apply_*` answer
False). The payment status follows the provider: UNKNOWN (not asked yet, or
no answer), PROCESSING (capture not yet confirmed), CAPTURED, DECLINED; a
captured payment is never "un-captured" by a late failure.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

from services.billing.domain.catalog import Priced


class PurchaseState(StrEnum):
    PENDING = "PENDING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CHARGED_BACK = "CHARGED_BACK"


class PaymentStatus(StrEnum):
    UNKNOWN = "UNKNOWN"
    PROCESSING = "PROCESSING"
    CAPTURED = "CAPTURED"
    DECLINED = "DECLINED"


TERMINAL = frozenset({PurchaseState.COMPLETED, PurchaseState.FAILED, PurchaseState.CHARGED_BACK})


def new_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class Purchase:
    """One sale. Immutable: every transition returns the next value (or the same one when not applied)."""

    purchase_id: str
    request_id: str
    fingerprint: str
    account_id: str
    bundle_id: str
    connects: int
    amount_cents: int
    currency: str
    payment_method: str
    created_at: datetime
    state: PurchaseState = PurchaseState.PENDING
    payment_status: PaymentStatus = PaymentStatus.UNKNOWN
    payment_intent_id: str = ""
    payment_reference: str = ""
    credit_transaction_id: str = ""
    failure_reason: str = ""
    captured_at: datetime | None = None
    finished_at: datetime | None = None

    @classmethod
    def new(cls, *, request_id: str, fingerprint: str, account_id: str, item: Priced, payment_method: str,
            now: datetime) -> Purchase:
        return cls(new_id(), request_id, fingerprint, account_id, item.bundle_id, item.connects,
                   item.amount_minor, item.currency, payment_method, now)

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    @property
    def needs_charge(self) -> bool:
        """PENDING and the provider has not told us about the payment yet (charge, idempotently)."""
        return self.state is PurchaseState.PENDING and self.payment_status is PaymentStatus.UNKNOWN

    @property
    def awaiting_capture(self) -> bool:
        return self.state is PurchaseState.PENDING and self.payment_status is PaymentStatus.PROCESSING

    @property
    def needs_credit(self) -> bool:
        """Captured but its Connects not yet confirmed by the ledger."""
        return self.state is PurchaseState.PENDING and self.payment_status is PaymentStatus.CAPTURED

    def payment_processing(self, intent_id: str, reference: str) -> Purchase:
        """The provider accepted the payment and will confirm its capture later."""
        if self.state is not PurchaseState.PENDING or self.payment_status is not PaymentStatus.UNKNOWN:
            return self
        return replace(self, payment_status=PaymentStatus.PROCESSING, payment_intent_id=intent_id,
                       payment_reference=reference)

    def payment_captured(self, intent_id: str, reference: str, now: datetime) -> Purchase:
        """The payment was captured: the Connects are owed (unless the purchase already ended)."""
        if self.state is not PurchaseState.PENDING or self.payment_status is PaymentStatus.CAPTURED:
            return self
        if self.payment_status is PaymentStatus.DECLINED:
            return self
        return replace(self, payment_status=PaymentStatus.CAPTURED, payment_intent_id=intent_id,
                       payment_reference=reference or self.payment_reference, captured_at=now)

    def payment_failed(self, intent_id: str, reason: str, now: datetime) -> Purchase:
        """The payment was declined or failed: FAILED, nothing credited. Not applied once captured or ended."""
        if self.state is not PurchaseState.PENDING or self.payment_status is PaymentStatus.CAPTURED:
            return self
        return replace(self, state=PurchaseState.FAILED, payment_status=PaymentStatus.DECLINED,
                       payment_intent_id=intent_id or self.payment_intent_id, failure_reason=reason,
                       finished_at=now)

    def credited(self, transaction_id: str, now: datetime) -> Purchase:
        """The ledger confirmed the credit: COMPLETED (only from PENDING with a captured payment)."""
        if not self.needs_credit:
            return self
        return replace(self, state=PurchaseState.COMPLETED, credit_transaction_id=transaction_id, finished_at=now)

    def credit_refused(self, reason: str, now: datetime) -> Purchase:
        """The ledger refused the credit for good (e.g. the wallet limit): FAILED; the caller refunds."""
        if not self.needs_credit:
            return self
        return replace(self, state=PurchaseState.FAILED, failure_reason=reason, finished_at=now)

    def charged_back(self) -> Purchase:
        if self.state is not PurchaseState.COMPLETED:
            return self
        return replace(self, state=PurchaseState.CHARGED_BACK)
