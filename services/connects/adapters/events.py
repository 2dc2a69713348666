"""Ledger transactions as protobuf: API messages and `connects.ledger.v1` events."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import cast

from adsmon.connects.v1 import connects_pb2 as pb
from adsmon.connects.v1 import events_pb2
from adsmon.events.v1.event_pb2 import Event
from google.protobuf.timestamp_pb2 import Timestamp

from services.connects.domain.model import (
    LedgerTransaction,
    Lot,
    LotMovement,
    LotSource,
    ReturnReason,
    SpendReason,
    TransactionKind,
)
from services.kit.kafka import make_event

__all__ = ["ledger_event", "transaction_pb"]

# The stubs type EnumTypeWrapper.Value as a plain int; the numbers are the proto enums' values.
LOT_SOURCE = {s: cast(pb.LotSource, pb.LotSource.Value(f"LOT_SOURCE_{s.value}")) for s in LotSource}
SPEND_REASON = {r: cast(pb.SpendReason, pb.SpendReason.Value(f"SPEND_REASON_{r.value}")) for r in SpendReason}
RETURN_REASON = {r: cast(pb.ReturnReason, pb.ReturnReason.Value(f"RETURN_REASON_{r.value}")) for r in ReturnReason}
KIND = {k: cast(pb.TransactionKind, pb.TransactionKind.Value(f"TRANSACTION_KIND_{k.value}")) for k in TransactionKind}
FROM_LOT_SOURCE = {v: k for k, v in LOT_SOURCE.items()}
FROM_SPEND_REASON = {v: k for k, v in SPEND_REASON.items()}
FROM_RETURN_REASON = {v: k for k, v in RETURN_REASON.items()}


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def timestamp(value: datetime) -> Timestamp:
    """`value` (naive: UTC) as a Timestamp, by integer arithmetic: Timestamp.FromDatetime goes through
    utctimetuple() and calendar.timegm, a few microseconds each on every Spend's answer and event."""
    delta = (value if value.tzinfo else value.replace(tzinfo=UTC)) - _EPOCH
    return Timestamp(seconds=delta.days * 86_400 + delta.seconds, nanos=delta.microseconds * 1000)


def movement_pb(m: LotMovement) -> pb.LotMovement:
    return pb.LotMovement(lot_id=m.lot_id, source=LOT_SOURCE[m.source], origin_source=LOT_SOURCE[m.origin_source],
                          amount=m.amount, expires_at=timestamp(m.expires_at))


def lot_pb(lot: Lot) -> pb.Lot:
    return pb.Lot(lot_id=lot.lot_id, source=LOT_SOURCE[lot.source], origin_source=LOT_SOURCE[lot.origin_source],
                  amount=lot.amount, remaining=lot.remaining, held=lot.held, issued_at=timestamp(lot.issued_at),
                  expires_at=timestamp(lot.expires_at))


def _fields(tx: LedgerTransaction) -> dict[str, object]:
    return {
        "transaction_id": tx.transaction_id, "account_id": tx.account_id, "kind": KIND[tx.kind],
        "amount": tx.amount, "source": LOT_SOURCE[tx.source] if tx.source else 0,
        "spend_reason": SPEND_REASON[tx.spend_reason] if tx.spend_reason else 0,
        "return_reason": RETURN_REASON[tx.return_reason] if tx.return_reason else 0,
        "reference": tx.reference, "hold_id": tx.hold_id, "returned_transaction_id": tx.returned_transaction_id,
        "lot_movements": [movement_pb(m) for m in tx.movements],
        "postings": [pb.Posting(ledger_account=p.ledger_account, amount=p.amount) for p in tx.postings],
        "available_after": tx.available_after, "held_after": tx.held_after,
        "occurred_at": timestamp(tx.occurred_at), "sequence": tx.sequence,
    }


def transaction_pb(tx: LedgerTransaction) -> pb.LedgerTransaction:
    return pb.LedgerTransaction(**_fields(tx))  # type: ignore[arg-type]


def ledger_event(tx: LedgerTransaction, causation_id: str = "") -> Event:
    """The envelope for one committed transaction; event_id is derived from the transaction id."""
    payload = events_pb2.LedgerTransactionRecorded(**_fields(tx))  # type: ignore[arg-type]
    return make_event(payload, tx.account_id, "connects", causation_id=causation_id,
                      event_id=f"connects-tx-{tx.transaction_id}", occurred_at=tx.occurred_at)
