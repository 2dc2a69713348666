"""In-memory fakes of promoted profiles' ports (same contracts as the SQLAlchemy adapters)."""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta

from adsmon.connects.v1 import connects_pb2 as cpb
from adsmon.events.v1.event_pb2 import Event

from services.ads.domain.promoted import BudgetDay, Campaign, Click, ClickOutcome
from services.ads.service_layer import promoted as uc
from services.connects.client import AbstractConnectsClient, Balance, Move, ReversedCredit
from services.kit import errors


@dataclass
class Store:
    campaigns: dict[str, Campaign] = field(default_factory=dict)
    days: dict[tuple[str, date], tuple[int, int, bool]] = field(default_factory=dict)  # budget, spent, stopped
    clicks: dict[str, Click] = field(default_factory=dict)
    requests: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    outbox: list[tuple[str, Event]] = field(default_factory=list)


class _Campaigns(uc.AbstractCampaignRepository):
    def __init__(self, s: Store) -> None:
        self.s = s

    def add(self, campaign: Campaign) -> None:
        self.s.campaigns[campaign.campaign_id] = campaign

    def get(self, campaign_id: str) -> Campaign | None:
        return self.s.campaigns.get(campaign_id)

    def save(self, campaign: Campaign) -> None:
        self.s.campaigns[campaign.campaign_id] = campaign

    def list_for(self, freelancer_id: str, limit: int, before: tuple[datetime, str] | None) -> list[Campaign]:
        mine = sorted((c for c in self.s.campaigns.values() if c.freelancer_id == freelancer_id),
                      key=lambda c: (c.created_at, c.campaign_id), reverse=True)
        return [c for c in mine if before is None or (c.created_at, c.campaign_id) < before][:limit]


class _Budgets(uc.AbstractBudgetRepository):
    def __init__(self, s: Store) -> None:
        self.s = s

    def get(self, campaign_id: str, day: date) -> BudgetDay | None:
        row = self.s.days.get((campaign_id, day))
        return BudgetDay(campaign_id, day, row[1], row[2]) if row else None

    def reserve(self, campaign_id: str, day: date, budget: int, price: int) -> int | None:
        b, spent, stopped = self.s.days.setdefault((campaign_id, day), (budget, 0, False))
        if stopped or spent >= b:
            return None
        self.s.days[(campaign_id, day)] = (b, spent + price, stopped)
        return spent + price

    def refund(self, campaign_id: str, day: date, price: int, *, stop: bool) -> None:
        b, spent, stopped = self.s.days[(campaign_id, day)]
        self.s.days[(campaign_id, day)] = (b, spent - price, stopped or stop)


class _Clicks(uc.AbstractClickRepository):
    def __init__(self, s: Store) -> None:
        self.s = s

    def claim(self, click: Click) -> Click | None:
        if click.click_key in self.s.clicks:
            return self.s.clicks[click.click_key]
        self.s.clicks[click.click_key] = click
        return None

    def resolve(self, click_key: str, outcome: ClickOutcome, transaction_id: str, now: datetime) -> bool:
        click = self.s.clicks[click_key]
        if click.outcome is not ClickOutcome.PENDING:
            return False
        self.s.clicks[click_key] = replace(click, outcome=outcome, transaction_id=transaction_id)
        return True

    def pending(self, older_than: datetime, limit: int) -> list[Click]:
        return [c for c in self.s.clicks.values() if c.outcome is ClickOutcome.PENDING
                and c.created_at is not None and c.created_at < older_than][:limit]


class _Requests(uc.AbstractRequestRepository):
    def __init__(self, s: Store) -> None:
        self.s = s

    def get(self, request_id: str) -> tuple[str, bytes] | None:
        return self.s.requests.get(request_id)

    def add(self, request_id: str, fingerprint: str, answer: bytes, now: datetime) -> None:
        self.s.requests.setdefault(request_id, (fingerprint, answer))


class FakePromotedUnitOfWork(uc.PromotedUnitOfWork):
    """Works on a copy of the shared store; `commit` makes the copy the store (one writer at a time)."""

    _lock = threading.Lock()

    def __init__(self, store: Store) -> None:
        super().__init__()
        self.store = store
        self.commits = 0

    def __enter__(self) -> FakePromotedUnitOfWork:
        super().__enter__()
        self._lock.acquire()
        self.work = copy.copy(self.store)
        for name in ("campaigns", "days", "clicks", "requests"):
            setattr(self.work, name, dict(getattr(self.store, name)))
        self.work.outbox = list(self.store.outbox)
        self.campaigns, self.budgets = _Campaigns(self.work), _Budgets(self.work)
        self.clicks, self.requests = _Clicks(self.work), _Requests(self.work)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            super().__exit__(*exc)
        finally:
            self._lock.release()

    def publish(self, topic: str, event: Event) -> None:
        self.work.outbox.append((topic, event))

    def commit(self) -> None:
        for name in ("campaigns", "days", "clicks", "requests", "outbox"):
            setattr(self.store, name, getattr(self.work, name))
        self.committed = True
        self.commits += 1

    def rollback(self) -> None:
        pass


class FakeConnects(AbstractConnectsClient):
    """A ledger of wallets; spends are idempotent by request_id like the real one."""

    def __init__(self, balances: dict[str, int] | None = None) -> None:
        self.balances = dict(balances or {})
        self.spends: dict[str, tuple[str, int]] = {}
        self.down = False
        self.calls = 0
        self._lock = threading.Lock()

    def spend(self, request_id: str, account_id: str, amount: int, reason: str, reference: str) -> Move:
        with self._lock:
            self.calls += 1
            if self.down:
                raise errors.Unavailable("LEDGER_UNAVAILABLE", "connects is down")
            if request_id in self.spends:
                return Move(f"tx-{request_id}", self.spends[request_id][1])
            if self.balances.get(account_id, 0) < amount:
                raise errors.FailedPrecondition("INSUFFICIENT_CONNECTS", "not enough Connects")
            self.balances[account_id] -= amount
            self.spends[request_id] = (account_id, amount)
            return Move(f"tx-{request_id}", amount)

    def spent_by(self, account_id: str) -> int:
        return sum(a for acct, a in self.spends.values() if acct == account_id)

    def credit(self, request_id: str, account_id: str, amount: int, source: str, reference: str) -> Move:
        raise NotImplementedError

    def hold(self, request_id: str, account_id: str, amount: int, reason: str, reference: str,
             ttl: timedelta) -> Move:
        raise NotImplementedError

    def increase_hold(self, request_id: str, hold_id: str, new_amount: int) -> Move:
        raise NotImplementedError

    def capture(self, request_id: str, hold_id: str, amount: int) -> Move:
        raise NotImplementedError

    def release(self, request_id: str, hold_id: str) -> Move:
        raise NotImplementedError

    def reverse_credit(self, request_id: str, credit_transaction_id: str) -> ReversedCredit:
        raise NotImplementedError  # billing's, never ads'

    def balance(self, account_id: str) -> Balance:
        return Balance(account_id, self.balances.get(account_id, 0), 0)

    def ledger_totals(self, start: datetime, end: datetime) -> cpb.GetLedgerTotalsResponse:
        raise NotImplementedError


class FakeMetrics(uc.PromotedMetricsPort):
    def __init__(self) -> None:
        self.requested = self.served = 0
        self.clicks: list[tuple[ClickOutcome, int]] = []
        self.connects_errors: list[str] = []

    def placements(self, requested: int, served: object) -> None:
        self.requested += requested
        self.served += len(served)  # type: ignore[arg-type]

    def click(self, outcome: ClickOutcome, charged: int) -> None:
        self.clicks.append((outcome, charged))

    def connects_error(self, reason: str) -> None:
        self.connects_errors.append(reason)


class Clock:
    def __init__(self, start: datetime = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += timedelta(**kw)
