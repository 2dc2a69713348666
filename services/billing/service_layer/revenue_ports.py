"""The payment provider's own records, as the books need them: the third leg of the reconciliation.

Billing's own purchases, chargebacks and membership payments are read through
`services.billing.service_layer.ports.PurchaseLookup` (the money-in half's
port). The payment provider adapter (the sandbox, or a real provider)
implements `PaymentRecords` from the provider's side: what it says it
captured and took back, whatever billing believes.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class ProviderPayment:
    """A payment the provider captured."""

    payment_reference: str
    purchase_id: str         # from the intent's idempotency key `billing:purchase:<purchase_id>`
    amount_cents: int
    captured_at: datetime


@dataclass(frozen=True)
class ProviderReversal:
    """Money the provider took back from a captured payment: a lost dispute (chargeback) or a refund."""

    payment_reference: str
    purchase_id: str
    amount_cents: int
    kind: str                # DISPUTE or REFUND
    reversed_at: datetime


class PaymentRecords(abc.ABC):
    """The payment provider's records of Connects purchases (membership fees are not listed here)."""

    @abc.abstractmethod
    def captured_payments(self, start: datetime, end: datetime) -> list[ProviderPayment]:
        """Purchase payments captured in [start, end)."""

    @abc.abstractmethod
    def reversals(self, start: datetime, end: datetime) -> list[ProviderReversal]:
        """Disputes lost and refunds of purchase payments in [start, end)."""
