"""The books' proto boundary: ledger events in (LedgerTransactionRecorded -> LedgerTx), billing events out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from adsmon.billing.v1 import billing_pb2
from adsmon.billing.v1 import events_pb2 as billing_events
from adsmon.connects.v1 import connects_pb2, events_pb2
from adsmon.events.v1.event_pb2 import Event
from adsmon.type.v1 import money_pb2
from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper
from google.protobuf.message import DecodeError

from services.billing.domain import revenue
from services.billing.domain.revenue import LedgerTx, Movement, Summary
from services.kit.kafka import UndecodableEvent, make_event

PRODUCER = "billing"
CURRENCY = "USD"



def _names(enum: EnumTypeWrapper, prefix: str) -> dict[int, str]:
    return {value: name.removeprefix(prefix) for name, value in enum.items() if value}


# Name lookups as plain dicts: the consumer converts 100,000s of events (EnumTypeWrapper.Name is 10x slower).
_KINDS = _names(connects_pb2.TransactionKind, "TRANSACTION_KIND_")
_REASONS = _names(connects_pb2.SpendReason, "SPEND_REASON_")
_SOURCES = _names(connects_pb2.LotSource, "LOT_SOURCE_")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_LEDGER_URL = "type.googleapis.com/" + events_pb2.LedgerTransactionRecorded.DESCRIPTOR.full_name
# The books' column widths (revenue_tables): longer ids are refused up front, not by a failing batch.
_MAX_TX_ID, _MAX_ACCOUNT_ID, _MAX_LOT_ID = 64, 128, 64


def _named(names: dict[int, str], value: int) -> str:
    return names.get(value) or (f"UNKNOWN_{value}" if value else "")


def ledger_tx(msg: events_pb2.LedgerTransactionRecorded) -> LedgerTx:
    """The domain view of one ledger event."""
    sources = _SOURCES
    ts = msg.occurred_at
    return LedgerTx(
        transaction_id=msg.transaction_id, account_id=msg.account_id, kind=_named(_KINDS, msg.kind),
        amount=msg.amount, occurred_at=_EPOCH + timedelta(seconds=ts.seconds, microseconds=ts.nanos // 1000),
        source=_named(sources, msg.source), reason=_named(_REASONS, msg.spend_reason),
        reference=msg.reference, returned_transaction_id=msg.returned_transaction_id,
        movements=tuple([Movement(m.lot_id, sources.get(m.origin_source or m.source) or
                                  _named(sources, m.origin_source or m.source), m.amount)
                         for m in msg.lot_movements]),
        balance_after=msg.available_after + msg.held_after, sequence=msg.sequence)


def decode_ledger_event(event: Event) -> LedgerTx:
    """The ledger transaction an envelope carries; UndecodableEvent (dead-lettered at once) if it carries
    none, or one the books cannot hold (an id missing or longer than its column)."""
    payload = event.payload
    if payload.type_url != _LEDGER_URL:
        raise UndecodableEvent(f"event {event.event_id}: payload is not a LedgerTransactionRecorded "
                               f"({payload.type_url!r})")
    msg = events_pb2.LedgerTransactionRecorded()
    try:
        msg.ParseFromString(payload.value)
    except DecodeError as exc:
        raise UndecodableEvent(f"event {event.event_id}: payload is not a LedgerTransactionRecorded ({exc})") \
            from None
    tx = ledger_tx(msg)
    if not 0 < len(tx.transaction_id) <= _MAX_TX_ID or not 0 < len(tx.account_id) <= _MAX_ACCOUNT_ID or any(
            not 0 < len(m.lot_id) <= _MAX_LOT_ID for m in tx.movements):
        raise UndecodableEvent(f"event {event.event_id}: transaction, account or lot id missing or too long")
    return tx


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
