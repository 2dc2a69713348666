"""The books' proto boundary: ledger events in (LedgerTransactionRecorded -> LedgerTx), billing events out."""

from __future__ import annotations

from datetime import UTC

from adsmon.billing.v1 import billing_pb2
from adsmon.billing.v1 import events_pb2 as billing_events
from adsmon.connects.v1 import connects_pb2, events_pb2
from adsmon.events.v1.event_pb2 import Event
from adsmon.type.v1 import money_pb2
from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper

from services.billing.domain import revenue
from services.billing.domain.revenue import LedgerTx, Movement, Summary
from services.kit.kafka import decode_payload, make_event, payload_registry

LEDGER_REGISTRY = payload_registry(events_pb2.LedgerTransactionRecorded)
PRODUCER = "billing"
CURRENCY = "USD"



def _name(enum: EnumTypeWrapper, value: int, prefix: str) -> str:
    """The value's name without prefix; "" when unset."""
    if not value:
        return ""
    try:
        return enum.Name(value).removeprefix(prefix)
    except ValueError:
        return f"UNKNOWN_{value}"


def kind_name(kind: int) -> str:
    """The ledger's kind name (REVERSAL, ReverseCredit's claw-back, is the domain's REVERSE_CREDIT)."""
    return _name(connects_pb2.TransactionKind, kind, "TRANSACTION_KIND_")


def ledger_tx(msg: events_pb2.LedgerTransactionRecorded) -> LedgerTx:
    """The domain view of one ledger event."""
    kind = kind_name(msg.kind)
    reason = _name(connects_pb2.SpendReason, msg.spend_reason, "SPEND_REASON_")
    return LedgerTx(
        transaction_id=msg.transaction_id, account_id=msg.account_id, kind=kind, amount=msg.amount,
        occurred_at=msg.occurred_at.ToDatetime(tzinfo=UTC),
        source=_name(connects_pb2.LotSource, msg.source, "LOT_SOURCE_"), reason=reason,
        reference=msg.reference, returned_transaction_id=msg.returned_transaction_id,
        movements=tuple(Movement(m.lot_id, _name(connects_pb2.LotSource, m.origin_source or m.source,
                                                 "LOT_SOURCE_"), m.amount) for m in msg.lot_movements),
        balance_after=msg.available_after + msg.held_after, sequence=msg.sequence)


def decode_ledger_event(event: Event) -> LedgerTx:
    msg = decode_payload(event, LEDGER_REGISTRY)
    assert isinstance(msg, events_pb2.LedgerTransactionRecorded)
    return ledger_tx(msg)


def money(cents: int) -> money_pb2.Money:
    return money_pb2.Money(amount_minor=cents, currency_code=CURRENCY)


PRODUCT_PB = {revenue.Product.PROPOSALS: billing_pb2.PRODUCT_PROPOSALS,
              revenue.Product.BOOSTS: billing_pb2.PRODUCT_BOOSTS,
              revenue.Product.BADGE: billing_pb2.PRODUCT_BADGE,
              revenue.Product.PROMOTED_PROFILES: billing_pb2.PRODUCT_PROMOTED_PROFILES}


def outcome_events(tx: LedgerTx, out: Summary) -> list[Event]:
    """RevenueRecognised (one per product) and BreakageRecognised for one transaction's outcome.

    Event ids derive from the ledger transaction, so a replay that got past de-duplication would
    still publish the same ids (and consumers of billing.events.v1 drop the copy)."""
    events = []
    for product, (connects, cents) in sorted(out.recognised.items()):
        msg = billing_events.RevenueRecognised(account_id=tx.account_id, product=PRODUCT_PB[product],
                                               connects=connects, amount=money(cents),
                                               ledger_transaction_id=tx.transaction_id)
        events.append(make_event(msg, tx.account_id, PRODUCER, event_id=f"revenue:{tx.transaction_id}:{product}",
                                 occurred_at=tx.occurred_at))
    if out.breakage_connects:
        msg2 = billing_events.BreakageRecognised(account_id=tx.account_id, connects=out.breakage_connects,
                                                 amount=money(out.breakage_cents),
                                                 ledger_transaction_id=tx.transaction_id)
        events.append(make_event(msg2, tx.account_id, PRODUCER, event_id=f"breakage:{tx.transaction_id}",
                                 occurred_at=tx.occurred_at))
    return events
