"""What a mutation answers, and its stable encoding for the idempotency store."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any, TypeVar

from services.connects.domain.model import (
    LedgerTransaction,
    LotMovement,
    LotSource,
    Posting,
    ReturnReason,
    SpendReason,
    TransactionKind,
)


@dataclass(frozen=True)
class Receipt:
    """The answer to a mutation: its main transaction (and, for a hold, the hold).

    IncreaseHold answers the hold's new total (`hold_amount`) and its reason (which authorises a replay); its
    `transaction` is None when the hold already held that amount (nothing was recorded). Every other
    mutation's receipt has a transaction.
    """

    transaction: LedgerTransaction | None
    hold_id: str = ""
    hold_expires_at: datetime | None = None
    hold_amount: int = 0
    hold_reason: SpendReason | None = None
    already_spent: int = 0  # ReverseCredit: the credit's Connects it could not remove

    @property
    def recorded(self) -> LedgerTransaction:
        """The transaction of a mutation that always records one (all but IncreaseHold)."""
        if self.transaction is None:
            raise AssertionError("this receipt records no transaction")
        return self.transaction


E = TypeVar("E", bound=Enum)


def _enum(cls: type[E], value: str) -> E | None:
    return cls(value) if value else None


def tx_to_dict(tx: LedgerTransaction) -> dict[str, object]:
    return {
        "id": tx.transaction_id, "account": tx.account_id, "kind": tx.kind.value, "amount": tx.amount,
        "at": tx.occurred_at.isoformat(), "seq": tx.sequence,
        "postings": [[p.ledger_account, p.amount] for p in tx.postings],
        "moves": [[m.lot_id, m.source.value, m.origin_source.value, m.amount, m.expires_at.isoformat()]
                  for m in tx.movements],
        "source": tx.source.value if tx.source else "",
        "spend_reason": tx.spend_reason.value if tx.spend_reason else "",
        "return_reason": tx.return_reason.value if tx.return_reason else "",
        "reference": tx.reference, "hold_id": tx.hold_id, "returned": tx.returned_transaction_id,
        "available_after": tx.available_after, "held_after": tx.held_after,
    }


def tx_from_dict(d: dict[str, Any]) -> LedgerTransaction:
    return LedgerTransaction(
        transaction_id=d["id"], account_id=d["account"], kind=TransactionKind(d["kind"]), amount=d["amount"],
        occurred_at=datetime.fromisoformat(d["at"]), sequence=d["seq"],
        postings=tuple(Posting(a, v) for a, v in d["postings"]),
        movements=tuple(LotMovement(lot, LotSource(s), LotSource(o), amt, datetime.fromisoformat(exp))
                        for lot, s, o, amt, exp in d["moves"]),
        source=_enum(LotSource, d["source"]), spend_reason=_enum(SpendReason, d["spend_reason"]),
        return_reason=_enum(ReturnReason, d["return_reason"]), reference=d["reference"],
        hold_id=d["hold_id"], returned_transaction_id=d["returned"],
        available_after=d["available_after"], held_after=d["held_after"],
    )


def encode(receipt: Receipt) -> bytes:
    body: dict[str, object] = {
        "tx": tx_to_dict(receipt.transaction) if receipt.transaction else None, "hold_id": receipt.hold_id,
        "hold_expires_at": receipt.hold_expires_at.isoformat() if receipt.hold_expires_at else ""}
    if receipt.hold_reason is not None:  # IncreaseHold only: earlier answers keep their exact encoding
        body["hold_amount"] = receipt.hold_amount
        body["hold_reason"] = receipt.hold_reason.value
    if receipt.already_spent:  # ReverseCredit only
        body["spent"] = receipt.already_spent
    return json.dumps(body, separators=(",", ":")).encode()


def decode(data: bytes) -> Receipt:
    body = json.loads(data)
    expires = body["hold_expires_at"]
    return Receipt(tx_from_dict(body["tx"]) if body["tx"] else None, body["hold_id"],
                   datetime.fromisoformat(expires) if expires else None, body.get("hold_amount", 0),
                   _enum(SpendReason, body.get("hold_reason")), body.get("spent", 0))
