"""The payment provider as billing sees it: a port, its values and its failures.

Every charge carries an idempotency key billing derives from its own ids
(`billing:purchase:<purchase_id>`), so asking again after a timeout, a crash
or a transient error returns the first payment instead of charging twice. A
provider that does not answer raises `PaymentProviderUnavailable` (unknown
outcome: ask again with the same key). A declined card is not an exception:
the intent comes back with status DECLINED.

Capture may be asynchronous: an intent answered PROCESSING is confirmed by a
webhook event (`payment_intent.succeeded` / `payment_intent.payment_failed`),
which may arrive late, twice or out of order; `retrieve` reads the intent's
status now. Disputes arrive as `charge.dispute.created` events.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class IntentStatus(StrEnum):
    PROCESSING = "PROCESSING"
    SUCCEEDED = "SUCCEEDED"
    DECLINED = "DECLINED"


class EventType(StrEnum):
    PROCESSING = "payment_intent.processing"
    SUCCEEDED = "payment_intent.succeeded"
    FAILED = "payment_intent.payment_failed"
    REFUNDED = "charge.refunded"
    DISPUTE_CREATED = "charge.dispute.created"


@dataclass(frozen=True)
class PaymentIntent:
    intent_id: str
    status: IntentStatus
    amount_cents: int
    currency: str
    charge_id: str = ""
    decline_code: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ProviderEvent:
    """A webhook event. `object_id` is the payment intent; disputes also carry dispute_id, amount and reason."""

    event_id: str
    type: str
    object_id: str
    created_at: datetime
    data: Mapping[str, str] = field(default_factory=dict)


EventHandler = Callable[[ProviderEvent], object]


class PaymentProvider(abc.ABC):
    """Charges, reads and refunds payments; delivers webhook events to the subscribed handler."""

    @abc.abstractmethod
    def create_payment(self, *, idempotency_key: str, amount_cents: int, currency: str, payment_method: str,
                       metadata: Mapping[str, str]) -> PaymentIntent:
        """Create and confirm a payment intent (idempotent on the key). Raises PaymentProviderUnavailable."""

    @abc.abstractmethod
    def retrieve(self, intent_id: str) -> PaymentIntent:
        """The intent as the provider knows it now. Raises PaymentProviderUnavailable."""

    @abc.abstractmethod
    def refund(self, *, idempotency_key: str, intent_id: str, amount_cents: int) -> str:
        """Refund a captured payment (idempotent on the key); the refund's id."""

    def subscribe(self, handler: EventHandler) -> None:  # noqa: B027 - optional for providers that push by HTTP
        """Deliver webhook events to `handler` (in-process providers); HTTP providers POST them instead."""

    def close(self) -> None:  # noqa: B027 - nothing to release by default
        """Stop delivering events and release connections."""
