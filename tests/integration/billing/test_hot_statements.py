"""Billing's hot inserts on PostgreSQL: compiled once, and still doing exactly what their SQLAlchemy form says.

`postgresql.insert(...)` has no cache key in SQLAlchemy 2.0, so run as a statement it is compiled on every call
(a tenth of a purchase's interpreter time); `kit.sqltext` sends its text, compiled once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from services.billing.adapters.repository import BillingUnitOfWork
from services.billing.adapters.tables import provider_events, purchases
from services.billing.domain import catalog
from services.billing.domain.purchase import Purchase
from services.billing.service_layer.payments import ProviderEvent
from tests.conftest import unique
from tests.support.compilations import count_compilations

pytestmark = pytest.mark.integration
NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def _purchase(request_id: str) -> Purchase:
    item = catalog.price(bundle_id="connects-10", agency=False, currency="USD")
    return Purchase.new(request_id=request_id, fingerprint="f" * 64, account_id=unique("acct"), item=item,
                        payment_method="pm_card_visa", now=NOW)


def _event(event_id: str) -> ProviderEvent:
    return ProviderEvent(event_id, "payment_intent.succeeded", unique("pi"), NOW, {"purchase_id": "p1"})


def _add(engine: sa.Engine, p: Purchase) -> bool:
    with BillingUnitOfWork(engine) as uow:
        added = uow.purchases.add(p, resume_at=NOW + timedelta(seconds=30))
        uow.commit()
    return added


def _record(engine: sa.Engine, event: ProviderEvent, outcome: str) -> None:
    with BillingUnitOfWork(engine) as uow:
        uow.provider_events.record(event, outcome, NOW)
        uow.commit()


def test_purchase_insert_and_webhook_record_are_not_compiled_per_call(billing_engine, monkeypatch):
    _add(billing_engine, _purchase(unique("warm")))  # the first use compiles
    _record(billing_engine, _event(unique("evt")), "APPLIED")
    compilations = count_compilations(monkeypatch)
    for _ in range(10):
        assert _add(billing_engine, _purchase(unique("req")))
        _record(billing_engine, _event(unique("evt")), "IGNORED")
    assert compilations.count == 0


def test_purchase_insert_writes_every_column_once_per_request_id(billing_engine):
    first = _purchase(unique("req"))
    assert _add(billing_engine, first)
    assert not _add(billing_engine, _purchase(first.request_id))  # the same request_id: nothing written
    with billing_engine.connect() as conn:
        rows = conn.execute(sa.select(purchases).where(purchases.c.request_id == first.request_id)).all()
    assert len(rows) == 1
    row = rows[0]
    assert (row.purchase_id, row.connects, row.amount_cents, row.state, row.attempts) == (
        first.purchase_id, first.connects, first.amount_cents, "PENDING", 0)
    assert row.created_at == NOW and row.next_attempt_at == NOW + timedelta(seconds=30)
    assert row.lease_until is None and row.captured_at is None


def test_webhook_record_keeps_the_first_final_outcome(billing_engine):
    retried, final = _event(unique("evt")), _event(unique("evt"))
    _record(billing_engine, retried, "RETRY")
    _record(billing_engine, retried, "APPLIED")  # a redelivery applied it: the outcome moves on
    _record(billing_engine, final, "APPLIED")
    _record(billing_engine, final, "RETRY")  # a final outcome stays
    with billing_engine.connect() as conn:
        got = dict(conn.execute(sa.select(provider_events.c.event_id, provider_events.c.outcome).where(
            provider_events.c.event_id.in_([retried.event_id, final.event_id]))).all())
    assert got == {retried.event_id: "APPLIED", final.event_id: "APPLIED"}
