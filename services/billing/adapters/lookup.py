"""`PurchaseLookup` over billing's own tables (read-only; for revenue reports and reconciliation)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from services.billing.adapters.tables import chargebacks, membership_cycles, purchases
from services.billing.service_layer.ports import (
    ChargebackRecord,
    MembershipPaymentRecord,
    PurchaseLookup,
    PurchaseRecord,
)


def utc(value: datetime | None) -> datetime | None:
    """Aware UTC (SQLite hands back naive datetimes)."""
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def purchase_record(r: Any) -> PurchaseRecord:
    return PurchaseRecord(
        purchase_id=r.purchase_id, account_id=r.account_id, bundle_id=r.bundle_id, connects=r.connects,
        amount_cents=r.amount_cents, currency=r.currency, state=r.state, payment_status=r.payment_status,
        payment_intent_id=r.payment_intent_id or "", payment_reference=r.payment_reference or "",
        credit_request_id=r.credit_request_id, credit_transaction_id=r.credit_transaction_id or "",
        failure_reason=r.failure_reason or "", created_at=utc(r.created_at),  # type: ignore[arg-type]
        captured_at=utc(r.captured_at), finished_at=utc(r.finished_at))


def chargeback_record(r: Any) -> ChargebackRecord:
    return ChargebackRecord(
        chargeback_id=r.chargeback_id, purchase_id=r.purchase_id, account_id=r.account_id,
        amount_cents=r.amount_cents, currency=r.currency, connects=r.connects,
        connects_removed=r.connects_removed, connects_already_spent=r.connects_already_spent,
        loss_cents=r.loss_cents, provider_reference=r.provider_reference, state=r.state,
        reversal_transaction_id=r.reversal_transaction_id or "",
        created_at=utc(r.created_at), recorded_at=utc(r.recorded_at))  # type: ignore[arg-type]


def membership_payment_record(r: Any) -> MembershipPaymentRecord:
    return MembershipPaymentRecord(
        membership_id=r.membership_id, account_id=r.account_id, cycle=r.cycle, kind=r.kind, plan=r.plan,
        period_start=utc(r.period_start), period_end=utc(r.period_end),  # type: ignore[arg-type]
        fee_cents=r.fee_cents, currency=r.currency, connects=r.connects, state=r.state,
        payment_reference=r.payment_reference or "", credit_transaction_id=r.credit_transaction_id or "",
        paid_at=utc(r.paid_at), finished_at=utc(r.finished_at))


class SqlAlchemyPurchaseLookup(PurchaseLookup):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def by_id(self, purchase_id: str) -> PurchaseRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(purchases).where(purchases.c.purchase_id == purchase_id)).first()
        return purchase_record(row) if row else None

    def between(self, start: datetime, end: datetime) -> list[PurchaseRecord]:
        q = (sa.select(purchases)
             .where(purchases.c.credit_transaction_id.is_not(None),
                    purchases.c.finished_at >= start, purchases.c.finished_at < end)
             .order_by(purchases.c.finished_at, purchases.c.purchase_id))
        with self.engine.connect() as conn:
            return [purchase_record(r) for r in conn.execute(q)]

    def credited(self, *, batch_size: int = 10_000) -> Iterator[PurchaseRecord]:
        after = ""
        while True:
            q = (sa.select(purchases)
                 .where(purchases.c.credit_transaction_id.is_not(None), purchases.c.purchase_id > after)
                 .order_by(purchases.c.purchase_id).limit(batch_size))
            with self.engine.connect() as conn:
                rows = [purchase_record(r) for r in conn.execute(q)]
            yield from rows
            if len(rows) < batch_size:
                return
            after = rows[-1].purchase_id

    def chargebacks_between(self, start: datetime, end: datetime) -> list[ChargebackRecord]:
        q = (sa.select(chargebacks)
             .where(chargebacks.c.state == "RECORDED", chargebacks.c.recorded_at >= start,
                    chargebacks.c.recorded_at < end)
             .order_by(chargebacks.c.recorded_at, chargebacks.c.chargeback_id))
        with self.engine.connect() as conn:
            return [chargeback_record(r) for r in conn.execute(q)]

    def chargeback_for(self, purchase_id: str) -> ChargebackRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(chargebacks).where(chargebacks.c.purchase_id == purchase_id)).first()
        return chargeback_record(row) if row else None

    def membership_payments_between(self, start: datetime, end: datetime) -> list[MembershipPaymentRecord]:
        c = membership_cycles.c
        q = (sa.select(membership_cycles)
             .where(c.state == "GRANTED", c.finished_at >= start, c.finished_at < end)
             .order_by(c.finished_at, c.membership_id, c.cycle))
        with self.engine.connect() as conn:
            return [membership_payment_record(r) for r in conn.execute(q)]
