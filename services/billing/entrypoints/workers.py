"""Billing's background loops on the kit's Worker: the pending-step resumer and the renewal scheduler.

Both are safe in several replicas at once: rows are claimed with a lease
(`FOR UPDATE SKIP LOCKED` on PostgreSQL) and every effect is keyed (the
provider's idempotency key, the ledger's request_id, the cycle's unique key).
"""

from __future__ import annotations

from services.billing.service_layer import chargebacks, memberships, purchases
from services.billing.service_layer.context import Context
from services.kit.worker import Worker

SERVICE = "billing"


class PendingResumer(Worker):
    """Finishes purchases and chargebacks left PENDING by a crash, an outage or a lost answer."""

    def __init__(self, ctx: Context, *, interval: float = 1.0, batch: int = 50) -> None:
        super().__init__("pending-resumer", service=SERVICE, interval=interval)
        self.ctx = ctx
        self.batch = batch

    def run_once(self) -> bool:
        done = purchases.resume_pending(self.ctx, self.batch) + chargebacks.resume_pending(self.ctx, self.batch)
        return done >= self.batch


class RenewalScheduler(Worker):
    """Renews due memberships (fee, then the cycle's grant), retries declined fees, lapses the unpaid."""

    def __init__(self, ctx: Context, *, interval: float = 30.0, batch: int = 100) -> None:
        super().__init__("renewals", service=SERVICE, interval=interval)
        self.ctx = ctx
        self.batch = batch

    def run_once(self) -> bool:
        return memberships.run_renewals(self.ctx, self.batch) >= self.batch
