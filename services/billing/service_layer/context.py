"""What billing's use cases run with: the unit of work, the payment provider, the ledger, the clock, metrics."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from services.billing.domain.membership import PlanTerms
from services.billing.service_layer.payments import PaymentProvider
from services.connects.client import AbstractConnectsClient


class Metrics(Protocol):
    """What billing's money-in reports (prometheus_client in adapters.metrics)."""

    def purchase_finished(self, outcome: str, connects: int) -> None: ...

    def payment_call(self, outcome: str, seconds: float) -> None: ...

    def renewal(self, outcome: str) -> None: ...

    def chargeback_recorded(self, connects_removed: int, loss_cents: int) -> None: ...

    def webhook_event(self, type_: str, outcome: str) -> None: ...


class NullMetrics:
    def purchase_finished(self, outcome: str, connects: int) -> None:
        pass

    def payment_call(self, outcome: str, seconds: float) -> None:
        pass

    def renewal(self, outcome: str) -> None:
        pass

    def chargeback_recorded(self, connects_removed: int, loss_cents: int) -> None:
        pass

    def webhook_event(self, type_: str, outcome: str) -> None:
        pass


@dataclass(frozen=True)
class RetryPolicy:
    """How background steps retry: infrastructure failures back off; declined renewals wait `renewal_retry_after`,
    `renewal_attempts` times in all, then the membership lapses."""

    resume_after: timedelta = timedelta(seconds=5)  # a pending purchase untouched this long is resumed
    lease: timedelta = timedelta(seconds=30)
    backoff_initial: timedelta = timedelta(seconds=1)
    backoff_max: timedelta = timedelta(minutes=5)
    renewal_retry_after: timedelta = timedelta(days=1)
    renewal_attempts: int = 3

    def backoff(self, attempts: int) -> timedelta:
        return min(self.backoff_max, self.backoff_initial * (2 ** min(attempts, 20)))


@dataclass
class Context:
    """The collaborators of every use case (bootstrap builds it; tests pass fakes)."""

    uow: Callable[[], Any]  # -> a unit of work with purchases, chargebacks, memberships, cycles, requests, ...
    provider: PaymentProvider
    ledger: AbstractConnectsClient
    clock: Callable[[], datetime]
    metrics: Metrics = field(default_factory=NullMetrics)
    terms: PlanTerms = field(default_factory=PlanTerms)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
