"""Chargeback (payment reversal) rules (pure; DOMAIN.md, "Chargebacks").

The purchased Connects still unspent are removed from the wallet (the ledger
says how many it could remove); the ones already spent stay spent and their
value is a loss. The purchase's money splits exactly in two integer parts:
deferred revenue reversed (unspent) and loss (spent), in proportion to the
Connects, rounded half up on the loss, so reversed + loss == amount always.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime


@dataclass(frozen=True)
class Reversal:
    connects_removed: int
    connects_already_spent: int
    loss_cents: int
    reversed_cents: int


def reversal(*, connects: int, amount_cents: int, removed: int) -> Reversal:
    """Split a charged-back purchase of `connects` for `amount_cents` given the `removed` Connects."""
    if connects <= 0 or amount_cents < 0:
        raise ValueError("a purchase has Connects and a non-negative price")
    if not 0 <= removed <= connects:
        raise ValueError(f"removed {removed} is outside 0..{connects}")
    spent = connects - removed
    loss = (2 * amount_cents * spent + connects) // (2 * connects)
    return Reversal(removed, spent, loss, amount_cents - loss)


@dataclass(frozen=True)
class Chargeback:
    """A recorded payment reversal; PENDING until the ledger confirmed the clawback, then RECORDED."""

    chargeback_id: str
    request_id: str
    fingerprint: str
    purchase_id: str
    account_id: str
    amount_cents: int
    currency: str
    connects: int
    credit_transaction_id: str
    provider_reference: str
    reason: str
    created_at: datetime
    state: str = "PENDING"
    connects_removed: int = 0
    connects_already_spent: int = 0
    loss_cents: int = 0
    reversal_transaction_id: str = ""
    recorded_at: datetime | None = None

    def recorded(self, *, removed: int, transaction_id: str, now: datetime) -> Chargeback:
        """The ledger removed `removed` Connects: book the split (only once)."""
        if self.state != "PENDING":
            return self
        r = reversal(connects=self.connects, amount_cents=self.amount_cents, removed=removed)
        return replace(self, state="RECORDED", connects_removed=r.connects_removed,
                       connects_already_spent=r.connects_already_spent, loss_cents=r.loss_cents,
                       reversal_transaction_id=transaction_id, recorded_at=now)
