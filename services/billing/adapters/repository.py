"""Billing's repositories and unit of work over SQLAlchemy Core (PostgreSQL; SQLite for `make run`).

Rows are read into the domain's frozen values and written back whole. Rows
that workers pick up (pending purchases, cycles, chargebacks) are claimed
with a lease (`lease_until`) set by one UPDATE that only one replica can win,
so two schedulers never work the same row at once; the unique keys on each
effect are the final guard.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from services.billing.adapters.lookup import utc
from services.billing.adapters.tables import (
    chargebacks,
    membership_cycles,
    membership_requests,
    memberships,
    provider_events,
    purchases,
)
from services.billing.domain.chargeback import Chargeback
from services.billing.domain.membership import CycleGrant, CycleState, GrantKind, Membership, MembershipState, Plan
from services.billing.domain.purchase import PaymentStatus, Purchase, PurchaseState
from services.billing.service_layer.payments import ProviderEvent
from services.billing.service_layer.ports import purchase_credit_request_id
from services.kit import sqltext
from services.kit.db import is_postgres
from services.kit.uow import SqlAlchemyUnitOfWork


def _insert(conn: Connection, table: sa.Table) -> Any:
    return (postgresql.insert(table) if is_postgres(conn) else sqlite.insert(table))


_PREBUILT: dict[tuple[str, str], Any] = {}


def _prebuilt(conn: Connection, name: str, build: Any) -> Any:
    """A hot-path statement built once per dialect and executed with parameters (no per-call construction)."""
    key = (conn.dialect.name, name)
    stmt = _PREBUILT.get(key)
    if stmt is None:
        stmt = _PREBUILT[key] = build()
    return stmt


def _binds(row: dict[str, Any]) -> dict[str, Any]:
    """`.values()` naming every column of `row` as a bind parameter: the statement's columns are fixed when it is
    built, not taken from each call's keys, so its text can be compiled once (`kit.sqltext`)."""
    return {name: sa.bindparam(name) for name in row}


def _inserted(conn: Connection, stmt: Any) -> bool:
    """Run an INSERT .. ON CONFLICT DO NOTHING; True if it wrote its row (RETURNING: psycopg reports
    rowcount -1 for Core INSERTs)."""
    table = stmt.table
    return conn.execute(stmt.returning(*table.primary_key.columns)).first() is not None


def _claim(conn: Connection, table: sa.Table, key: sa.Column[Any], now: datetime, lease: timedelta,
           limit: int) -> list[Any]:
    """Lease the PENDING rows of `table` that are due (next_attempt_at passed, no live lease) to this caller
    until now + lease. On PostgreSQL the candidates are locked SKIP LOCKED, so two replicas never claim one row."""
    c = table.c
    due = sa.select(key).where(
        c.state == "PENDING", sa.or_(c.next_attempt_at.is_(None), c.next_attempt_at <= now),
        sa.or_(c.lease_until.is_(None), c.lease_until <= now)).order_by(c.next_attempt_at).limit(limit)
    if is_postgres(conn):
        due = due.with_for_update(skip_locked=True)
    ids = list(conn.execute(due).scalars())
    if not ids:
        return []
    conn.execute(table.update().where(key.in_(ids)).values(lease_until=now + lease))
    return list(conn.execute(sa.select(table).where(key.in_(ids))))


def _purchase(r: Any) -> Purchase:
    return Purchase(
        purchase_id=r.purchase_id, request_id=r.request_id, fingerprint=r.fingerprint, account_id=r.account_id,
        bundle_id=r.bundle_id, connects=r.connects, amount_cents=r.amount_cents, currency=r.currency,
        payment_method=r.payment_method, created_at=utc(r.created_at),  # type: ignore[arg-type]
        state=PurchaseState(r.state), payment_status=PaymentStatus(r.payment_status),
        payment_intent_id=r.payment_intent_id or "", payment_reference=r.payment_reference or "",
        credit_transaction_id=r.credit_transaction_id or "", failure_reason=r.failure_reason or "",
        captured_at=utc(r.captured_at), finished_at=utc(r.finished_at))


def _purchase_row(p: Purchase, now: datetime) -> dict[str, Any]:
    return {
        "state": p.state.value, "payment_status": p.payment_status.value,
        "payment_intent_id": p.payment_intent_id or None, "payment_reference": p.payment_reference,
        "credit_transaction_id": p.credit_transaction_id or None, "failure_reason": p.failure_reason,
        "captured_at": p.captured_at, "finished_at": p.finished_at, "updated_at": now,
    }


class PurchaseRepository:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def _one(self, where: sa.ColumnElement[bool], lock: bool) -> Purchase | None:
        q = sa.select(purchases).where(where)
        if lock and is_postgres(self.conn):
            q = q.with_for_update()
        row = self.conn.execute(q).first()
        return _purchase(row) if row else None

    def get(self, purchase_id: str, *, lock: bool = False) -> Purchase | None:
        lock = lock and is_postgres(self.conn)

        def build() -> Any:
            q = sa.select(purchases).where(purchases.c.purchase_id == sa.bindparam("b_purchase_id"))
            return q.with_for_update() if lock else q

        stmt = _prebuilt(self.conn, f"purchase-get-{lock}", build)
        row = self.conn.execute(stmt, {"b_purchase_id": purchase_id}).first()
        return _purchase(row) if row else None

    def by_request(self, request_id: str) -> Purchase | None:
        return self._one(purchases.c.request_id == request_id, False)

    def add(self, p: Purchase, *, resume_at: datetime) -> bool:
        """Insert a new purchase; False if its request_id was taken meanwhile (nothing written)."""
        row = {"purchase_id": p.purchase_id, "request_id": p.request_id, "fingerprint": p.fingerprint,
               "account_id": p.account_id, "bundle_id": p.bundle_id, "connects": p.connects,
               "amount_cents": p.amount_cents, "currency": p.currency, "payment_method": p.payment_method,
               "credit_request_id": purchase_credit_request_id(p.purchase_id), "created_at": p.created_at,
               "next_attempt_at": resume_at, "attempts": 0, **_purchase_row(p, p.created_at)}
        stmt = _prebuilt(self.conn, "purchase-add", lambda: _insert(self.conn, purchases)
                         .values(_binds(row)).on_conflict_do_nothing(index_elements=["request_id"])
                         .returning(purchases.c.purchase_id))
        return sqltext.execute(self.conn, stmt, row).first() is not None

    def save(self, p: Purchase, now: datetime) -> None:
        values = _purchase_row(p, now)
        if p.terminal:
            values["lease_until"] = None
        self.conn.execute(purchases.update().where(purchases.c.purchase_id == p.purchase_id).values(values))

    def save_if_pending(self, p: Purchase, now: datetime) -> bool:
        """Save `p` only if the stored row is still PENDING; True if it was."""
        values = {**_purchase_row(p, now), "lease_until": None, "b_purchase_id": p.purchase_id}
        stmt = _prebuilt(self.conn, "purchase-save-if-pending", lambda: purchases.update().where(
            purchases.c.purchase_id == sa.bindparam("b_purchase_id"), purchases.c.state == "PENDING")
            .returning(purchases.c.purchase_id))
        return self.conn.execute(stmt, values).first() is not None

    def page(self, account_id: str, after: tuple[datetime, str] | None, limit: int) -> list[Purchase]:
        q = sa.select(purchases).where(purchases.c.account_id == account_id)
        if after is not None:
            q = q.where(sa.tuple_(purchases.c.created_at, purchases.c.purchase_id)
                        < sa.tuple_(sa.literal(after[0]), sa.literal(after[1])))
        q = q.order_by(purchases.c.created_at.desc(), purchases.c.purchase_id.desc()).limit(limit)
        return [_purchase(r) for r in self.conn.execute(q)]

    def claim_pending(self, now: datetime, lease: timedelta, limit: int) -> list[Purchase]:
        """PENDING purchases due for another attempt, leased to this caller until now + lease."""
        return [_purchase(r) for r in _claim(self.conn, purchases, purchases.c.purchase_id, now, lease, limit)]

    def retry_later(self, purchase_id: str, at: datetime) -> None:
        self.conn.execute(purchases.update().where(purchases.c.purchase_id == purchase_id)
                          .values(attempts=purchases.c.attempts + 1, next_attempt_at=at, lease_until=None))


def _chargeback(r: Any) -> Chargeback:
    return Chargeback(
        chargeback_id=r.chargeback_id, request_id=r.request_id, fingerprint=r.fingerprint,
        purchase_id=r.purchase_id, account_id=r.account_id, amount_cents=r.amount_cents, currency=r.currency,
        connects=r.connects, credit_transaction_id=r.credit_transaction_id,
        provider_reference=r.provider_reference, reason=r.reason, created_at=utc(r.created_at),  # type: ignore[arg-type]
        state=r.state, connects_removed=r.connects_removed, connects_already_spent=r.connects_already_spent,
        loss_cents=r.loss_cents, reversal_transaction_id=r.reversal_transaction_id or "",
        recorded_at=utc(r.recorded_at))


class ChargebackRepository:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def _one(self, where: sa.ColumnElement[bool], lock: bool = False) -> Chargeback | None:
        q = sa.select(chargebacks).where(where)
        if lock and is_postgres(self.conn):
            q = q.with_for_update()
        row = self.conn.execute(q).first()
        return _chargeback(row) if row else None

    def get(self, chargeback_id: str, *, lock: bool = False) -> Chargeback | None:
        return self._one(chargebacks.c.chargeback_id == chargeback_id, lock)

    def by_request(self, request_id: str) -> Chargeback | None:
        return self._one(chargebacks.c.request_id == request_id)

    def for_purchase(self, purchase_id: str) -> Chargeback | None:
        return self._one(chargebacks.c.purchase_id == purchase_id)

    def add(self, cb: Chargeback, *, resume_at: datetime) -> bool:
        """Insert; False if the purchase already has one or the request_id is taken (nothing written)."""
        row = {k: v for k, v in asdict(cb).items()}
        row.update(reversal_transaction_id=cb.reversal_transaction_id or None, next_attempt_at=resume_at,
                   attempts=0)
        return _inserted(self.conn, _insert(self.conn, chargebacks).values(row).on_conflict_do_nothing())

    def save(self, cb: Chargeback) -> None:
        self.conn.execute(chargebacks.update().where(chargebacks.c.chargeback_id == cb.chargeback_id).values(
            state=cb.state, connects_removed=cb.connects_removed, connects_already_spent=cb.connects_already_spent,
            loss_cents=cb.loss_cents, reversal_transaction_id=cb.reversal_transaction_id or None,
            recorded_at=cb.recorded_at, lease_until=None))

    def claim_pending(self, now: datetime, lease: timedelta, limit: int) -> list[Chargeback]:
        return [_chargeback(r) for r in _claim(self.conn, chargebacks, chargebacks.c.chargeback_id, now, lease,
                                               limit)]

    def retry_later(self, chargeback_id: str, at: datetime) -> None:
        self.conn.execute(chargebacks.update().where(chargebacks.c.chargeback_id == chargeback_id)
                          .values(attempts=chargebacks.c.attempts + 1, next_attempt_at=at, lease_until=None))


def _membership(r: Any) -> Membership:
    return Membership(
        account_id=r.account_id, membership_id=r.membership_id, plan=Plan(r.plan), state=MembershipState(r.state),
        fee_cents=r.fee_cents, currency=r.currency, monthly_connects=r.monthly_connects,
        payment_method=r.payment_method, anchor=utc(r.anchor), cycle=r.cycle,  # type: ignore[arg-type]
        period_start=utc(r.period_start), period_end=utc(r.period_end),  # type: ignore[arg-type]
        created_at=utc(r.created_at), cancelled_at=utc(r.cancelled_at), ended_at=utc(r.ended_at))  # type: ignore[arg-type]


class MembershipRepository:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def get(self, account_id: str, *, lock: bool = False) -> Membership | None:
        q = sa.select(memberships).where(memberships.c.account_id == account_id)
        if lock and is_postgres(self.conn):
            q = q.with_for_update()
        row = self.conn.execute(q).first()
        return _membership(row) if row else None

    def save(self, m: Membership, now: datetime) -> None:
        row = {"membership_id": m.membership_id, "plan": m.plan.value, "state": m.state.value,
               "fee_cents": m.fee_cents, "currency": m.currency, "monthly_connects": m.monthly_connects,
               "payment_method": m.payment_method, "anchor": m.anchor, "cycle": m.cycle,
               "period_start": m.period_start, "period_end": m.period_end, "cancelled_at": m.cancelled_at,
               "ended_at": m.ended_at, "updated_at": now}
        stmt = _insert(self.conn, memberships).values(account_id=m.account_id, created_at=m.created_at, **row)
        self.conn.execute(stmt.on_conflict_do_update(index_elements=["account_id"], set_=row))

    def claim_due(self, now: datetime, limit: int) -> list[Membership]:
        """Memberships whose period ended, locked for this transaction (other replicas skip them)."""
        q = (sa.select(memberships).where(memberships.c.period_end <= now)
             .order_by(memberships.c.period_end).limit(limit))
        if is_postgres(self.conn):
            q = q.with_for_update(skip_locked=True)
        return [_membership(r) for r in self.conn.execute(q)]


def _cycle(r: Any) -> CycleGrant:
    return CycleGrant(
        grant_id=r.grant_id, membership_id=r.membership_id, account_id=r.account_id, cycle=r.cycle,
        kind=GrantKind(r.kind),
        plan=Plan(r.plan), period_start=utc(r.period_start), period_end=utc(r.period_end),  # type: ignore[arg-type]
        fee_cents=r.fee_cents, currency=r.currency, connects=r.connects, payment_method=r.payment_method,
        created_at=utc(r.created_at), request_id=r.request_id, state=CycleState(r.state),  # type: ignore[arg-type]
        payment_status=r.payment_status, payment_intent_id=r.payment_intent_id or "",
        payment_reference=r.payment_reference or "", payment_attempts=r.payment_attempts,
        credit_transaction_id=r.credit_transaction_id or "", failure_reason=r.failure_reason or "",
        paid_at=utc(r.paid_at), finished_at=utc(r.finished_at), next_attempt_at=utc(r.next_attempt_at))


def _cycle_key(g: CycleGrant) -> sa.ColumnElement[bool]:
    return membership_cycles.c.grant_id == g.grant_id


class CycleRepository:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def add(self, g: CycleGrant) -> bool:
        """Insert the cycle's grant; False if that (membership, cycle, kind) exists (the unique key)."""
        row = _cycle_row(g)
        row.update(grant_id=g.grant_id, membership_id=g.membership_id, cycle=g.cycle, kind=g.kind.value,
                   account_id=g.account_id, created_at=g.created_at, request_id=g.request_id,
                   period_start=g.period_start)
        return _inserted(self.conn, _insert(self.conn, membership_cycles).values(row).on_conflict_do_nothing())

    def get(self, grant_id: str, *, lock: bool = False) -> CycleGrant | None:
        q = sa.select(membership_cycles).where(membership_cycles.c.grant_id == grant_id)
        if lock and is_postgres(self.conn):
            q = q.with_for_update()
        row = self.conn.execute(q).first()
        return _cycle(row) if row else None

    def save(self, g: CycleGrant) -> None:
        values = _cycle_row(g)
        if g.state is not CycleState.PENDING:
            values["lease_until"] = None
        self.conn.execute(membership_cycles.update().where(_cycle_key(g)).values(values))

    def for_account(self, account_id: str) -> list[CycleGrant]:
        c = membership_cycles.c
        q = sa.select(membership_cycles).where(c.account_id == account_id).order_by(c.cycle, c.kind)
        return [_cycle(r) for r in self.conn.execute(q)]

    def claim_pending(self, now: datetime, lease: timedelta, limit: int) -> list[CycleGrant]:
        return [_cycle(r) for r in _claim(self.conn, membership_cycles, membership_cycles.c.grant_id, now, lease,
                                          limit)]

    def retry_later(self, g: CycleGrant, at: datetime) -> None:
        self.conn.execute(membership_cycles.update().where(_cycle_key(g)).values(next_attempt_at=at,
                                                                                 lease_until=None))


def _cycle_row(g: CycleGrant) -> dict[str, Any]:
    return {"plan": g.plan.value, "period_end": g.period_end, "fee_cents": g.fee_cents, "currency": g.currency,
            "connects": g.connects, "payment_method": g.payment_method, "state": g.state.value,
            "payment_status": g.payment_status, "payment_intent_id": g.payment_intent_id or None,
            "payment_reference": g.payment_reference, "payment_attempts": g.payment_attempts,
            "credit_transaction_id": g.credit_transaction_id or None, "failure_reason": g.failure_reason,
            "paid_at": g.paid_at, "finished_at": g.finished_at, "next_attempt_at": g.next_attempt_at}


class RequestRepository:
    """Stored answers of the membership commands (idempotency)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def get(self, request_id: str) -> tuple[str, str, dict[str, Any]] | None:
        row = self.conn.execute(sa.select(membership_requests)
                                .where(membership_requests.c.request_id == request_id)).first()
        return (row.method, row.fingerprint, json.loads(row.response)) if row else None

    def add(self, request_id: str, method: str, fingerprint: str, account_id: str, response: dict[str, Any],
            now: datetime) -> bool:
        stmt = _insert(self.conn, membership_requests).values(
            request_id=request_id, method=method, fingerprint=fingerprint, account_id=account_id,
            response=json.dumps(response, default=str), created_at=now).on_conflict_do_nothing()
        return _inserted(self.conn, stmt)


class ProviderEventRepository:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def record(self, event: ProviderEvent, outcome: str, now: datetime) -> None:
        """Store a webhook event with what was done with it (the first final outcome stays)."""
        row = {"event_id": event.event_id, "type": event.type, "object_id": event.object_id,
               "payload": json.dumps(dict(event.data)), "outcome": outcome, "created_at": event.created_at,
               "received_at": now}

        def build() -> Any:
            stmt = _insert(self.conn, provider_events).values(_binds(row))
            not_final = sa.and_(*(provider_events.c.outcome != v for v in ("APPLIED", "IGNORED", "UNMATCHED")))
            return stmt.on_conflict_do_update(index_elements=["event_id"], set_={"outcome": stmt.excluded.outcome},
                                              where=not_final)

        sqltext.execute(self.conn, _prebuilt(self.conn, "provider-event-record", build), row)

    def outcome(self, event_id: str) -> str | None:
        stmt = _prebuilt(self.conn, "provider-event-outcome", lambda: sa.select(provider_events.c.outcome)
                         .where(provider_events.c.event_id == sa.bindparam("b_event_id")))
        return self.conn.execute(stmt, {"b_event_id": event_id}).scalar_one_or_none()

    def outcomes(self, object_id: str) -> list[tuple[str, str]]:
        rows = self.conn.execute(sa.select(provider_events.c.type, provider_events.c.outcome)
                                 .where(provider_events.c.object_id == object_id)
                                 .order_by(provider_events.c.received_at))
        return [(r.type, r.outcome) for r in rows]


class BillingUnitOfWork(SqlAlchemyUnitOfWork):
    """One transaction over billing's repositories and its outbox."""

    purchases: PurchaseRepository
    chargebacks: ChargebackRepository
    memberships: MembershipRepository
    cycles: CycleRepository
    requests: RequestRepository
    provider_events: ProviderEventRepository

    def open_repositories(self, conn: Connection) -> None:
        self.purchases = PurchaseRepository(conn)
        self.chargebacks = ChargebackRepository(conn)
        self.memberships = MembershipRepository(conn)
        self.cycles = CycleRepository(conn)
        self.requests = RequestRepository(conn)
        self.provider_events = ProviderEventRepository(conn)
