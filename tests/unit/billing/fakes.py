"""Fakes for billing's service layer: the ledger (same contract as GrpcConnectsClient) and a clock."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta

from adsmon.connects.v1 import connects_pb2 as pb

from services.connects.client import AbstractConnectsClient, Balance, Move, ReversedCredit
from services.kit.errors import AlreadyExists, FailedPrecondition, NotFound, Unavailable


class FakeClock:
    def __init__(self, now: datetime | None = None) -> None:
        self.now = now or datetime(2027, 1, 31, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> datetime:
        self.now += timedelta(**kw)
        return self.now


class FakeLedger(AbstractConnectsClient):
    """Credits idempotent on request_id (same id, other request: REQUEST_ID_REUSED); `down` makes the next calls
    fail as an unreachable ledger, `lose_answers` applies them but loses the answer (a timeout)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: dict[str, tuple[tuple[object, ...], object]] = {}
        self.credits: dict[str, tuple[str, int, str, str]] = {}  # tx id -> account, amount, source, reference
        self.balances: dict[str, int] = {}
        self.spent: dict[str, int] = {}  # credit tx id -> Connects of it spent (tests set it)
        self.reversed: set[str] = set()
        self.down = 0
        self.lose_answers = 0
        self.calls = 0

    def _gate(self) -> None:
        self.calls += 1
        if self.down:
            self.down -= 1
            raise Unavailable("LEDGER_UNAVAILABLE", "fake ledger is down")

    def _lost(self) -> None:
        if self.lose_answers:
            self.lose_answers -= 1
            raise Unavailable("LEDGER_UNAVAILABLE", "fake ledger answer lost")

    def credit(self, request_id: str, account_id: str, amount: int, source: str, reference: str) -> Move:
        with self.lock:
            self._gate()
            key = ("credit", account_id, amount, source, reference)
            if request_id in self.requests:
                prior, answer = self.requests[request_id]
                if prior != key:
                    raise AlreadyExists("REQUEST_ID_REUSED", "reused")
                self._lost()
                return answer  # type: ignore[return-value]
            tx = uuid.uuid4().hex
            self.credits[tx] = (account_id, amount, source, reference)
            self.balances[account_id] = self.balances.get(account_id, 0) + amount
            move = Move(tx, amount)
            self.requests[request_id] = (key, move)
            self._lost()
            return move

    def reverse_credit(self, request_id: str, credit_transaction_id: str) -> ReversedCredit:
        with self.lock:
            self._gate()
            if request_id in self.requests:
                return self.requests[request_id][1]  # type: ignore[return-value]
            if credit_transaction_id not in self.credits:
                raise NotFound("TRANSACTION_NOT_FOUND", "no such credit")
            if credit_transaction_id in self.reversed:
                raise FailedPrecondition("ALREADY_REVERSED", "reversed")
            account, amount, _, _ = self.credits[credit_transaction_id]
            spent = self.spent.get(credit_transaction_id, 0)
            removed = amount - spent
            self.balances[account] -= removed
            self.reversed.add(credit_transaction_id)
            answer = ReversedCredit(uuid.uuid4().hex if removed else "", removed, spent)
            self.requests[request_id] = (("reverse", credit_transaction_id), answer)
            return answer

    def credited(self, account_id: str, source: str = "PURCHASE") -> int:
        return sum(a for acct, a, s, _ in self.credits.values() if acct == account_id and s == source)

    def spend(self, *a: object, **k: object) -> Move:
        raise NotImplementedError

    def hold(self, *a: object, **k: object) -> Move:
        raise NotImplementedError

    def increase_hold(self, *a: object, **k: object) -> Move:
        raise NotImplementedError

    def capture(self, *a: object, **k: object) -> Move:
        raise NotImplementedError

    def release(self, *a: object, **k: object) -> Move:
        raise NotImplementedError

    def balance(self, account_id: str) -> Balance:
        return Balance(account_id, self.balances.get(account_id, 0), 0)

    def ledger_totals(self, start: datetime, end: datetime) -> pb.GetLedgerTotalsResponse:
        raise NotImplementedError
