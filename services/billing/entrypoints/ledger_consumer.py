"""Consumes `connects.ledger.v1`: billing's copy of every ledger transaction, once.

The idempotent consumer (services.kit.consumer) runs this inside the
transaction that records the event id, so a redelivered event is skipped
before it gets here; the primary key on transaction_id is a second guard
against the same transaction arriving under a different event id.
"""

from __future__ import annotations

from adsmon.connects.v1 import connects_pb2, events_pb2
from adsmon.events.v1.event_pb2 import Event
from sqlalchemy.engine import Connection

from services.billing.adapters.tables import ledger_transactions
from services.kit.consumer import Record
from services.kit.kafka import decode_payload, payload_registry

REGISTRY = payload_registry(events_pb2.LedgerTransactionRecorded)


def _source_or_reason(msg: events_pb2.LedgerTransactionRecorded) -> str:
    if msg.spend_reason:
        return connects_pb2.SpendReason.Name(msg.spend_reason).removeprefix("SPEND_REASON_")
    if msg.source:
        return connects_pb2.LotSource.Name(msg.source).removeprefix("LOT_SOURCE_")
    if msg.return_reason:
        return connects_pb2.ReturnReason.Name(msg.return_reason).removeprefix("RETURN_REASON_")
    return ""


def purchased_part(msg: events_pb2.LedgerTransactionRecorded) -> int:
    """Connects of this transaction that came from purchased lots (they carry deferred revenue)."""
    return sum(m.amount for m in msg.lot_movements
               if (m.origin_source or m.source) == connects_pb2.LOT_SOURCE_PURCHASE)


def handle_ledger_event(conn: Connection, event: Event, record: Record) -> None:
    """Record one ledger transaction in billing's database."""
    msg = decode_payload(event, REGISTRY)
    assert isinstance(msg, events_pb2.LedgerTransactionRecorded)
    if conn.execute(ledger_transactions.select().where(
            ledger_transactions.c.transaction_id == msg.transaction_id)).first():
        return
    conn.execute(ledger_transactions.insert().values(
        transaction_id=msg.transaction_id,
        event_id=event.event_id,
        account_id=msg.account_id,
        kind=connects_pb2.TransactionKind.Name(msg.kind).removeprefix("TRANSACTION_KIND_"),
        amount=msg.amount,
        source_or_reason=_source_or_reason(msg),
        purchased_amount=purchased_part(msg),
        reference=msg.reference,
        occurred_at=msg.occurred_at.ToDatetime(),
    ))
