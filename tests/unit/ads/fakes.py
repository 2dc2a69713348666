"""A fake connects ledger with the client's contract (request ids answered once, holds resolve once),
and a clock the test moves."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from services.connects.client import AbstractConnectsClient, Balance, Move, ReversedCredit
from services.kit.errors import AlreadyExists, DomainError, FailedPrecondition, NotFound, Unavailable


class Clock:
    def __init__(self, start: datetime = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


@dataclass
class FakeHold:
    hold_id: str
    account_id: str
    amount: int
    reference: str
    status: str = "OPEN"
    captured: int = 0


@dataclass
class FakeConnects(AbstractConnectsClient):
    """In-memory wallets; `down` makes every call Unavailable; `calls` lists (method, request_id)."""

    available: dict[str, int] = field(default_factory=dict)
    holds: dict[str, FakeHold] = field(default_factory=dict)
    spent: dict[str, int] = field(default_factory=dict)
    answers: dict[str, tuple[tuple[object, ...], Move | DomainError]] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)
    down: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fund(self, account: str, amount: int) -> None:
        self.available[account] = self.available.get(account, 0) + amount

    def held(self, account: str) -> int:
        return sum(h.amount for h in self.holds.values() if h.account_id == account and h.status == "OPEN")

    def _once(self, method: str, request_id: str, args: tuple[object, ...], apply: Callable[[], Move]) -> Move:
        with self.lock:
            self.calls.append((method, request_id))
            if self.down:
                raise Unavailable("LEDGER_UNAVAILABLE", "fake ledger is down")
            if request_id in self.answers:
                first_args, answer = self.answers[request_id]
                if first_args != (method, *args):
                    raise AlreadyExists("REQUEST_ID_REUSED", f"{request_id} reused")
            else:
                try:
                    answer = apply()
                except DomainError as refusal:
                    answer = refusal
                self.answers[request_id] = ((method, *args), answer)
            if isinstance(answer, DomainError):
                raise answer
            return answer

    def _take(self, account: str, amount: int) -> None:
        if self.available.get(account, 0) < amount:
            raise FailedPrecondition("INSUFFICIENT_CONNECTS", f"{account} cannot pay {amount}")
        self.available[account] -= amount

    def _open(self, hold_id: str) -> FakeHold:
        hold = self.holds.get(hold_id)
        if hold is None:
            raise NotFound("HOLD_NOT_FOUND", hold_id)
        if hold.status != "OPEN":
            raise FailedPrecondition("HOLD_NOT_OPEN", f"{hold_id} is {hold.status}")
        return hold

    def credit(self, request_id: str, account_id: str, amount: int, source: str, reference: str) -> Move:
        def apply() -> Move:
            self.fund(account_id, amount)
            return Move(uuid.uuid4().hex, amount)
        return self._once("credit", request_id, (account_id, amount), apply)

    def spend(self, request_id: str, account_id: str, amount: int, reason: str, reference: str) -> Move:
        def apply() -> Move:
            self._take(account_id, amount)
            self.spent[account_id] = self.spent.get(account_id, 0) + amount
            return Move(uuid.uuid4().hex, amount)
        return self._once("spend", request_id, (account_id, amount, reason), apply)

    def hold(self, request_id: str, account_id: str, amount: int, reason: str, reference: str,
             ttl: timedelta) -> Move:
        def apply() -> Move:
            self._take(account_id, amount)
            hold = FakeHold(uuid.uuid4().hex, account_id, amount, reference)
            self.holds[hold.hold_id] = hold
            return Move(uuid.uuid4().hex, amount, hold.hold_id)
        return self._once("hold", request_id, (account_id, amount, reference), apply)

    def increase_hold(self, request_id: str, hold_id: str, new_amount: int) -> Move:
        def apply() -> Move:
            hold = self._open(hold_id)
            self._take(hold.account_id, new_amount - hold.amount)
            hold.amount = new_amount
            return Move(uuid.uuid4().hex, new_amount, hold_id)
        return self._once("increase_hold", request_id, (hold_id, new_amount), apply)

    def capture(self, request_id: str, hold_id: str, amount: int) -> Move:
        def apply() -> Move:
            hold = self._open(hold_id)
            hold.status, hold.captured = "CAPTURED", amount
            self.available[hold.account_id] += hold.amount - amount
            self.spent[hold.account_id] = self.spent.get(hold.account_id, 0) + amount
            return Move(uuid.uuid4().hex, amount, hold_id)
        return self._once("capture", request_id, (hold_id, amount), apply)

    def release(self, request_id: str, hold_id: str) -> Move:
        def apply() -> Move:
            hold = self._open(hold_id)
            hold.status = "RELEASED"
            self.available[hold.account_id] += hold.amount
            return Move(uuid.uuid4().hex, hold.amount, hold_id)
        return self._once("release", request_id, (hold_id,), apply)

    def reverse_credit(self, request_id: str, credit_transaction_id: str) -> ReversedCredit:
        raise NotImplementedError("ads never reverses credits (billing only)")

    def balance(self, account_id: str) -> Balance:
        return Balance(account_id, self.available.get(account_id, 0), self.held(account_id))

    def ledger_totals(self, start: datetime, end: datetime):  # type: ignore[no-untyped-def]
        raise NotImplementedError
