"""The ports the ads use cases run over: repositories inside one unit of work, and the search counter.

Contracts (the SQLAlchemy adapter in adapters/repository.py implements them on PostgreSQL and SQLite):
- `get(..., lock=True)` locks the row for the rest of the unit of work (FOR UPDATE on PostgreSQL;
  SQLite's BEGIN IMMEDIATE already serialises writers);
- `claim_*` picks due rows no other unit of work holds (FOR UPDATE SKIP LOCKED) and pushes their next
  attempt `lease` into the future, so two replicas never work on the same row at once and a replica
  that dies mid-step leaves the row to be retried once the lease passes;
- `requests.add` raises `RequestInProgress` when the request_id is being recorded concurrently.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from datetime import datetime, timedelta

from services.ads.domain.auction import Auction, SettlementStep
from services.ads.domain.badge import Badge, Charge
from services.kit.errors import Aborted
from services.kit.uow import AbstractUnitOfWork


class RequestInProgress(Aborted):
    def __init__(self, request_id: str) -> None:
        super().__init__("REQUEST_IN_PROGRESS", f"request {request_id} is being processed; retry",
                         request_id=request_id)


@dataclass(frozen=True)
class StoredRequest:
    method: str
    fingerprint: str
    done: bool
    answer: str | None


@dataclass(frozen=True)
class ClaimedStep:
    step: SettlementStep
    attempts: int


@dataclass(frozen=True)
class Backlog:
    pending: int
    oldest_created_at: datetime | None


class AuctionRepository(abc.ABC):
    @abc.abstractmethod
    def get(self, job_id: str, *, lock: bool = True) -> Auction | None: ...

    @abc.abstractmethod
    def prefetch(self, job_id: str) -> None:
        """A hint: `get(job_id)` (locked) follows, so its read may travel with the next statement (an adapter
        may do nothing). Locks are then taken in that statement's round trip, in the order given."""

    @abc.abstractmethod
    def add(self, auction: Auction) -> None:
        """Insert a new auction (and its bids); raises RequestInProgress if the job's auction appeared meanwhile
        (at once, or when the unit of work sends its writes: at the latest on commit)."""

    @abc.abstractmethod
    def save(self, auction: Auction) -> None: ...

    @abc.abstractmethod
    def claim_due(self, now: datetime, limit: int) -> list[str]:
        """Open auctions whose time is up, locked (skip locked) for this unit of work."""

    @abc.abstractmethod
    def pending_bids(self, older_than: datetime, limit: int) -> list[tuple[str, str]]:
        """(job_id, proposal_id) of bids waiting for a ledger answer since before `older_than`, or in an auction
        that is no longer open."""

    @abc.abstractmethod
    def count_open(self) -> int: ...


class StepRepository(abc.ABC):
    @abc.abstractmethod
    def add(self, steps: list[SettlementStep], now: datetime) -> None: ...

    @abc.abstractmethod
    def claim(self, now: datetime, lease: timedelta, limit: int) -> list[ClaimedStep]: ...

    @abc.abstractmethod
    def prefetch_pending(self, job_id: str) -> None:
        """A hint: `pending_of(job_id)` follows (see AuctionRepository.prefetch)."""

    @abc.abstractmethod
    def pending_of(self, job_id: str) -> set[str]:
        """bid_ids of the auction's steps still to be confirmed, locked until the unit of work ends."""

    @abc.abstractmethod
    def done(self, bid_id: str, outcome: str, now: datetime) -> None: ...

    @abc.abstractmethod
    def retry_later(self, bid_id: str, error: str, at: datetime) -> None: ...

    @abc.abstractmethod
    def release_unsent_captures(self, job_id: str) -> int:
        """A cancelled job: captures never sent to the ledger become releases. Returns how many."""

    @abc.abstractmethod
    def backlog(self) -> Backlog: ...


class RequestRepository(abc.ABC):
    @abc.abstractmethod
    def get(self, request_id: str) -> StoredRequest | None: ...

    @abc.abstractmethod
    def add(self, request_id: str, method: str, fingerprint: str, now: datetime, answer: str | None = None) -> None:
        """Record a request: DONE with `answer`, or PENDING (waiting for the ledger) without one."""

    @abc.abstractmethod
    def claim(self, request_id: str, method: str, fingerprint: str, now: datetime) -> StoredRequest | None:
        """Record a new request as PENDING in one statement and return None; a request_id already recorded
        (committed, or committed meanwhile by a concurrent first attempt) is left as it is and returned."""

    @abc.abstractmethod
    def complete(self, request_id: str, answer: str) -> None: ...

    @abc.abstractmethod
    def forget(self, request_id: str) -> None:
        """Drop a PENDING request the ledger refused, so a retry is judged afresh."""


class BadgeRepository(abc.ABC):
    @abc.abstractmethod
    def get(self, freelancer_id: str, *, lock: bool = True) -> Badge | None: ...

    @abc.abstractmethod
    def save(self, badge: Badge) -> None: ...

    @abc.abstractmethod
    def claim_due(self, now: datetime, limit: int) -> list[str]:
        """freelancer_ids of active badges with a charge due, locked (skip locked)."""

    @abc.abstractmethod
    def active_in(self, category: str) -> list[str]:
        """freelancer_ids of the category's active badges, locked."""

    @abc.abstractmethod
    def active_counts(self) -> dict[str, int]:
        """Active badges per category."""


class ChargeRepository(abc.ABC):
    @abc.abstractmethod
    def add(self, charge: Charge, now: datetime) -> None: ...

    @abc.abstractmethod
    def claim(self, now: datetime, lease: timedelta, limit: int) -> list[Charge]: ...

    @abc.abstractmethod
    def lock(self, request_id: str, *, wait: bool) -> str | None:
        """Lock the charge until the unit of work ends and return its status; None if another transaction
        holds it and `wait` is false (or it does not exist)."""

    @abc.abstractmethod
    def resolve(self, request_id: str, status: str, transaction_id: str | None, now: datetime) -> None: ...

    @abc.abstractmethod
    def retry_later(self, request_id: str, at: datetime) -> None: ...


class PriceRepository(abc.ABC):
    @abc.abstractmethod
    def all(self) -> dict[str, int]: ...

    @abc.abstractmethod
    def get(self, category: str) -> int | None: ...

    @abc.abstractmethod
    def put(self, category: str, price: int, now: datetime, *, previous: int | None) -> bool:
        """Set the price if it still is `previous` (None: not set yet); False if another replica moved it."""


class SearchCountRepository(abc.ABC):
    @abc.abstractmethod
    def between(self, category: str, since: datetime, until: datetime) -> int:
        """Searches in `category` in the UTC hours that start in [since, until), every replica's flushed counts."""


class AdsUnitOfWork(AbstractUnitOfWork):
    auctions: AuctionRepository
    steps: StepRepository
    requests: RequestRepository
    badges: BadgeRepository
    charges: ChargeRepository
    prices: PriceRepository
    search_counts: SearchCountRepository


class SearchCounter(abc.ABC):
    """Talent searches per category (GetPlacements calls), for the badge price; read inside the pricing
    unit of work."""

    @abc.abstractmethod
    def searches(self, uow: AdsUnitOfWork, category: str, since: datetime, until: datetime) -> int: ...


class StoredSearches(SearchCounter):
    """The default: the searches every replica counted and flushed to the database (adapters/searches.py),
    so each replica prices a category from the same numbers."""

    def searches(self, uow: AdsUnitOfWork, category: str, since: datetime, until: datetime) -> int:
        return uow.search_counts.between(category, since, until)


class SearchRecorder(abc.ABC):
    """Where serving counts one talent search (a GetPlacements call) in a category; memory only."""

    @abc.abstractmethod
    def record(self, category: str, at: datetime) -> None: ...


class NoSearches(SearchCounter):
    """No demand from searches (tests of the badge alone); ads counts GetPlacements (adapters/searches.py)."""

    def searches(self, uow: AdsUnitOfWork, category: str, since: datetime, until: datetime) -> int:
        return 0
