"""Test doubles and builders for the books: ledger events, purchases rows, provider records, ledger totals."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from adsmon.connects.v1 import connects_pb2 as pb
from adsmon.connects.v1 import events_pb2
from sqlalchemy.engine import Engine

from services.billing.adapters.migrations import MIGRATIONS
from services.billing.adapters.tables import purchases
from services.billing.service_layer.revenue_ports import PaymentRecords, ProviderPayment, ProviderReversal
from services.connects.client import AbstractConnectsClient, Balance
from services.kit.kafka import encode_event, make_event
from services.kit.migrations import upgrade

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def migrate_books(engine: Engine) -> None:
    """Billing's Alembic revisions (the purchases' 0005, the books' 0006)."""
    upgrade(engine, MIGRATIONS)


def insert_purchase(engine: Engine, purchase_id: str, account_id: str, connects: int, cents: int, *,
                    state: str = "COMPLETED", at: datetime = T0, credit_transaction_id: str | None = None) -> None:
    with engine.begin() as conn:
        conn.execute(purchases.insert().values(
            purchase_id=purchase_id, request_id=f"req-{purchase_id}", fingerprint="f", account_id=account_id,
            bundle_id="", connects=connects, amount_cents=cents, currency="USD", payment_method="tok",
            state=state, payment_status="CAPTURED", payment_reference=f"pay-{purchase_id}",
            credit_request_id=f"billing:purchase:{purchase_id}:credit",
            credit_transaction_id=credit_transaction_id if credit_transaction_id is not None else
            (f"credit-{purchase_id}" if state in ("COMPLETED", "CHARGED_BACK") else None),
            created_at=at, finished_at=at if state != "PENDING" else None, updated_at=at))


class Ledger:
    """Builds LedgerTransactionRecorded events with per-account sequences and lot bookkeeping."""

    def __init__(self) -> None:
        self.seq: dict[str, int] = {}
        self.balance: dict[str, int] = {}

    def _msg(self, account: str, kind: int, amount: int, delta: int, at: datetime,
             movements: list[tuple[str, int, int]], **fields: Any) -> events_pb2.LedgerTransactionRecorded:
        src = fields.pop("_src", None)
        self.seq[account] = self.seq.get(account, 0) + 1
        self.balance[account] = self.balance.get(account, 0) + delta
        msg = events_pb2.LedgerTransactionRecorded(
            transaction_id=fields.pop("transaction_id", None) or uuid.uuid4().hex, account_id=account, kind=kind,
            amount=amount, sequence=self.seq[account], available_after=self.balance[account],
            lot_movements=[pb.LotMovement(lot_id=lot, source=src or origin, origin_source=origin, amount=n)
                           for lot, origin, n in movements],
            **fields)
        msg.occurred_at.FromDatetime(at)
        return msg

    def credit(self, account: str, amount: int, *, lot: str, source: int = pb.LOT_SOURCE_PURCHASE,
               purchase_id: str = "", at: datetime = T0, tx_id: str = "") -> events_pb2.LedgerTransactionRecorded:
        return self._msg(account, pb.TRANSACTION_KIND_CREDIT, amount, amount, at, [(lot, source, amount)],
                         source=source, reference=f"purchase:{purchase_id}" if purchase_id else "grant",
                         transaction_id=tx_id)

    def spend(self, account: str, moves: list[tuple[str, int, int]], *, reason: int = pb.SPEND_REASON_PROPOSAL,
              kind: int = pb.TRANSACTION_KIND_SPEND, at: datetime = T0,
              tx_id: str = "") -> events_pb2.LedgerTransactionRecorded:
        total = sum(n for _, _, n in moves)
        return self._msg(account, kind, total, -total, at, moves, spend_reason=reason, reference="job:1/proposal:2",
                         transaction_id=tx_id)

    def expire(self, account: str, moves: list[tuple[str, int, int]], *,
               at: datetime = T0) -> events_pb2.LedgerTransactionRecorded:
        total = sum(n for _, _, n in moves)
        return self._msg(account, pb.TRANSACTION_KIND_EXPIRE, total, -total, at, moves)

    def give_back(self, account: str, returned_tx: str, moves: list[tuple[str, int, int]], *,
                  at: datetime = T0) -> events_pb2.LedgerTransactionRecorded:
        total = sum(n for _, _, n in moves)
        return self._msg(account, pb.TRANSACTION_KIND_RETURN, total, total, at, moves,
                         return_reason=pb.RETURN_REASON_JOB_CANCELLED_BEFORE_CONTRACT,
                         returned_transaction_id=returned_tx, _src=pb.LOT_SOURCE_RETURN)

    def reverse(self, account: str, credit_tx: str, moves: list[tuple[str, int, int]], *, purchase_id: str,
                at: datetime = T0) -> events_pb2.LedgerTransactionRecorded:
        """ReverseCredit's REVERSAL: the unspent Connects of a PURCHASE credit's lot back to sales."""
        total = sum(n for _, _, n in moves)
        return self._msg(account, pb.TRANSACTION_KIND_REVERSAL, total, -total, at, moves,
                         source=pb.LOT_SOURCE_PURCHASE, reference=f"purchase:{purchase_id}",
                         returned_transaction_id=credit_tx)


@dataclass
class Rec:
    """A kafka ConsumerRecord look-alike."""

    value: bytes | None
    offset: int
    topic: str = "connects.ledger.v1"
    partition: int = 0
    key: bytes | None = b""


def records(msgs: list[events_pb2.LedgerTransactionRecorded], *, start_offset: int = 0,
            event_ids: list[str] | None = None) -> list[tuple[Any, Rec]]:
    out = []
    for i, m in enumerate(msgs):
        event = make_event(m, m.account_id, "connects", event_id=event_ids[i] if event_ids else None)
        out.append(("tp0", Rec(encode_event(event), start_offset + i)))
    return out


class CapturingDlq:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    def send(self, topic: str, key: bytes | None = None, value: bytes = b"") -> Any:
        self.sent.append((topic, value))

        class Done:
            def get(self, timeout: float | None = None) -> None:
                return None
        return Done()


@dataclass
class FakeProvider(PaymentRecords):
    payments: list[ProviderPayment] = field(default_factory=list)
    reversed: list[ProviderReversal] = field(default_factory=list)

    def pay(self, purchase_id: str, cents: int, at: datetime = T0) -> None:
        self.payments.append(ProviderPayment(f"pay-{purchase_id}", purchase_id, cents, at))

    def dispute(self, purchase_id: str, cents: int, at: datetime = T0) -> None:
        self.reversed.append(ProviderReversal(f"pay-{purchase_id}", purchase_id, cents, "DISPUTE", at))

    def captured_payments(self, start: datetime, end: datetime) -> list[ProviderPayment]:
        return [p for p in self.payments if start <= p.captured_at < end]

    def reversals(self, start: datetime, end: datetime) -> list[ProviderReversal]:
        return [r for r in self.reversed if start <= r.reversed_at < end]


class FakeLedgerTotals(AbstractConnectsClient):
    """Only GetLedgerTotals, computed from the events the test also gave billing."""

    def __init__(self) -> None:
        self.events: list[events_pb2.LedgerTransactionRecorded] = []
        self.unavailable = False

    def ledger_totals(self, start: datetime, end: datetime) -> pb.GetLedgerTotalsResponse:
        from services.kit.errors import Unavailable
        if self.unavailable:
            raise Unavailable("LEDGER_UNAVAILABLE", "the Connects ledger did not answer")
        issued: dict[int, int] = {}
        spent: dict[tuple[int, int], int] = {}
        expired: dict[int, int] = {}
        returned: dict[int, int] = {}
        reversed_: dict[int, int] = {}
        for m in self.events:
            if not start <= m.occurred_at.ToDatetime(tzinfo=UTC) < end:
                continue
            if m.kind == pb.TRANSACTION_KIND_CREDIT:
                issued[m.source] = issued.get(m.source, 0) + m.amount
            for lm in m.lot_movements:
                o = lm.origin_source
                if m.kind in (pb.TRANSACTION_KIND_SPEND, pb.TRANSACTION_KIND_CAPTURE):
                    spent[(m.spend_reason, o)] = spent.get((m.spend_reason, o), 0) + lm.amount
                elif m.kind == pb.TRANSACTION_KIND_EXPIRE:
                    expired[o] = expired.get(o, 0) + lm.amount
                elif m.kind == pb.TRANSACTION_KIND_RETURN:
                    returned[o] = returned.get(o, 0) + lm.amount
                elif m.kind == pb.TRANSACTION_KIND_REVERSAL:
                    reversed_[o] = reversed_.get(o, 0) + lm.amount
        return pb.GetLedgerTotalsResponse(
            issued=[pb.IssuedTotal(source=s, connects=n) for s, n in issued.items()],
            spent=[pb.SpentTotal(reason=r, origin_source=o, connects=n) for (r, o), n in spent.items()],
            expired=[pb.OriginTotal(origin_source=o, connects=n) for o, n in expired.items()],
            returned=[pb.OriginTotal(origin_source=o, connects=n) for o, n in returned.items()],
            reversed=[pb.OriginTotal(origin_source=o, connects=n) for o, n in reversed_.items()])

    def _no(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the books only read ledger totals")

    credit = spend = hold = increase_hold = capture = release = reverse_credit = _no  # type: ignore[assignment]

    def balance(self, account_id: str) -> Balance:
        raise AssertionError("the books only read ledger totals")


def count(engine: Engine, table: sa.Table) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def later(days: int) -> datetime:
    return T0 + timedelta(days=days)

