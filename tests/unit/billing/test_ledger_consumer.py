"""Billing's copy of the ledger: one row per ledger transaction, with its purchased part."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from adsmon.connects.v1 import connects_pb2 as pb
from adsmon.connects.v1 import events_pb2

from services.billing.adapters.migrations import MIGRATIONS
from services.billing.adapters.tables import ledger_transactions
from services.billing.entrypoints.ledger_consumer import handle_ledger_event, purchased_part
from services.kit.consumer import IdempotentConsumer
from services.kit.db import make_engine
from services.kit.kafka import encode_event, make_event
from services.kit.migrations import upgrade


class Rec:
    def __init__(self, value: bytes, offset: int) -> None:
        self.topic, self.partition, self.offset, self.key, self.value = "connects.ledger.v1", 0, offset, b"", value


class NoDlq:
    def send(self, *args, **kwargs):
        raise AssertionError("nothing should be dead-lettered")


@pytest.fixture
def engine(tmp_path):
    eng = make_engine(f"sqlite:///{tmp_path}/billing.db")
    upgrade(eng, MIGRATIONS)
    return eng


def spend_from_mixed_lots(tx_id: str = "tx-1") -> events_pb2.LedgerTransactionRecorded:
    msg = events_pb2.LedgerTransactionRecorded(
        transaction_id=tx_id, account_id="acct-1", kind=pb.TRANSACTION_KIND_SPEND, amount=12,
        spend_reason=pb.SPEND_REASON_BOOST, reference="job:9/proposal:3/boost",
        lot_movements=[
            pb.LotMovement(lot_id="a", source=pb.LOT_SOURCE_BONUS, origin_source=pb.LOT_SOURCE_BONUS, amount=5),
            pb.LotMovement(lot_id="b", source=pb.LOT_SOURCE_PURCHASE, origin_source=pb.LOT_SOURCE_PURCHASE,
                           amount=4),
            # A returned lot whose Connects were originally bought: still purchased (deferred revenue).
            pb.LotMovement(lot_id="c", source=pb.LOT_SOURCE_RETURN, origin_source=pb.LOT_SOURCE_PURCHASE,
                           amount=3),
        ])
    msg.occurred_at.FromDatetime(datetime(2026, 11, 29, tzinfo=UTC))
    return msg


def test_purchased_part_counts_lots_whose_origin_was_a_purchase():
    assert purchased_part(spend_from_mixed_lots()) == 7


def test_a_ledger_event_delivered_twice_is_recorded_once(engine):
    consumer = IdempotentConsumer(engine, "unused:1", "billing-ledger", ["connects.ledger.v1"],
                                  handle_ledger_event, service="billing-test", dlq_producer=NoDlq())
    event = make_event(spend_from_mixed_lots(), "acct-1", "connects")
    assert consumer.process(Rec(encode_event(event), 0)) == "applied"
    assert consumer.process(Rec(encode_event(event), 1)) == "duplicate"
    # The same transaction under another event id (a producer re-send) is still one row.
    again = make_event(spend_from_mixed_lots(), "acct-1", "connects")
    assert consumer.process(Rec(encode_event(again), 2)) == "applied"
    with engine.connect() as conn:
        rows = conn.execute(sa.select(ledger_transactions)).all()
    assert len(rows) == 1
    row = rows[0]
    assert (row.transaction_id, row.kind, row.amount, row.source_or_reason, row.purchased_amount) == \
           ("tx-1", "SPEND", 12, "BOOST", 7)
