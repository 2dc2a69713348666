"""What the revenue books must show, computed from ledger transactions alone (the tests' reference)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from adsmon.connects.v1 import connects_pb2 as pb

from services.billing.domain.revenue import Product

PRODUCT = {pb.SPEND_REASON_PROPOSAL: Product.PROPOSALS, pb.SPEND_REASON_BOOST: Product.BOOSTS,
           pb.SPEND_REASON_BADGE: Product.BADGE, pb.SPEND_REASON_PROMOTED_PROFILE: Product.PROMOTED_PROFILES}


def purchased(t: pb.LedgerTransaction) -> int:
    """The purchased Connects a transaction moved (its lot movements from purchase lots)."""
    return sum(m.amount for m in t.lot_movements if m.origin_source == pb.LOT_SOURCE_PURCHASE)


def purchased_figures(txs: Sequence[pb.LedgerTransaction]) -> tuple[int, dict[Product, int], int]:
    """(Connects bought, purchased Connects spent by product net of returns, purchased Connects expired)."""
    by_id = {t.transaction_id: t for t in txs}
    spent: dict[Product, int] = defaultdict(int)
    for t in txs:
        if t.kind in (pb.TRANSACTION_KIND_SPEND, pb.TRANSACTION_KIND_CAPTURE):
            spent[PRODUCT[t.spend_reason]] += purchased(t)
        elif t.kind == pb.TRANSACTION_KIND_RETURN:
            spent[PRODUCT[by_id[t.returned_transaction_id].spend_reason]] -= purchased(t)
    bought = sum(t.amount for t in txs if t.kind == pb.TRANSACTION_KIND_CREDIT and t.source == pb.LOT_SOURCE_PURCHASE)
    expired = sum(purchased(t) for t in txs if t.kind == pb.TRANSACTION_KIND_EXPIRE)
    return bought, dict(spent), expired
