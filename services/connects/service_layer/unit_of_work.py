"""The port the service layer writes through: one database transaction over a batch of commands."""

from __future__ import annotations

import abc
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime

from services.connects.domain.model import LedgerTransaction, Lot, Returnable, Wallet
from services.connects.service_layer.totals import LedgerTotals


@dataclass(frozen=True)
class StoredRequest:
    """An applied mutation: its idempotency key, what it was, and the answer it got."""

    request_id: str
    method: str
    fingerprint: str
    response: bytes


class RequestIdConflict(Exception):
    """Saving found request ids committed meanwhile by another transaction; retry the batch."""

    def __init__(self, request_ids: Iterable[str]) -> None:
        self.request_ids = sorted(request_ids)
        super().__init__(f"request ids committed concurrently: {self.request_ids}")


class AbstractLedgerUnitOfWork(abc.ABC):
    """Reads and locks what a batch needs, then saves every change in one commit.

    Implementations must make `lock_wallets` exclusive per account until
    commit/rollback (SELECT ... FOR UPDATE on PostgreSQL) so that several
    processes stay correct, and `save` or `commit` must refuse (RequestIdConflict)
    request ids that another transaction stored first, committing nothing.
    """

    def __enter__(self) -> AbstractLedgerUnitOfWork:
        return self

    def __exit__(self, *exc: object) -> None:
        self.rollback()

    def expect_wallets(self, account_ids: Collection[str]) -> None:
        """A hint, before `find_requests`: `lock_wallets` will follow for (a subset of) these accounts and no
        other, with no holds. An implementation may lock and load them with that first read (one round trip
        instead of two); the default ignores it."""
        return None

    @abc.abstractmethod
    def find_requests(self, request_ids: Iterable[str]) -> dict[str, StoredRequest]: ...

    @abc.abstractmethod
    def hold_accounts(self, hold_ids: Iterable[str]) -> dict[str, str]:
        """hold_id -> account_id (immutable, so it may be read before locking)."""

    @abc.abstractmethod
    def transaction_accounts(self, transaction_ids: Iterable[str]) -> dict[str, str]:
        """transaction_id -> account_id (immutable)."""

    @abc.abstractmethod
    def lock_wallets(self, account_ids: Iterable[str], hold_ids: Iterable[str],
                     must_exist: Collection[str] = ()) -> dict[str, Wallet]:
        """Lock the accounts' wallets in a consistent order and load their live lots and the given holds.

        Unknown accounts get an empty wallet (created when saved), except those of `must_exist`, which are
        left out of the answer, without creating, locking or waiting for any (a wallet is never deleted, so an
        account locked here keeps its wallet; one left out is treated as empty, as of before any concurrent
        first credit)."""

    @abc.abstractmethod
    def returnables(self, transaction_ids: Iterable[str]) -> dict[str, Returnable]:
        """The transactions to return and whether they were returned (read after locking)."""

    @abc.abstractmethod
    def save(self, wallets: Iterable[Wallet], requests: Iterable[StoredRequest], now: datetime) -> None:
        """Store the wallets' changes, their pending transactions (and outbox events) and the requests."""

    @abc.abstractmethod
    def commit(self) -> None: ...

    @abc.abstractmethod
    def rollback(self) -> None: ...


class AbstractLedgerQueries(abc.ABC):
    """Read side: balances and history, without locks."""

    @abc.abstractmethod
    def lots(self, account_id: str) -> list[Lot]:
        """The account's lots with Connects left (available or held)."""

    @abc.abstractmethod
    def transactions(self, account_id: str, before_sequence: int | None, limit: int) -> list[LedgerTransaction]:
        """Newest first, sequence < before_sequence when given."""

    @abc.abstractmethod
    def due_lot_accounts(self, now: datetime, limit: int) -> list[str]:
        """Accounts with Connects left in lots past their date."""

    @abc.abstractmethod
    def due_holds(self, now: datetime, limit: int) -> list[str]:
        """Open holds past their ttl."""

    @abc.abstractmethod
    def job_transactions(self, job_id: str) -> list[LedgerTransaction]:
        """SPEND and CAPTURE transactions whose reference names the job and that were not returned."""

    @abc.abstractmethod
    def open_holds(self) -> int: ...

    @abc.abstractmethod
    def ledger_totals(self, start: datetime, end: datetime) -> LedgerTotals:
        """The journal's totals (see LedgerTotals) for [start, end), both UTC; sums exact, never int64-bound."""
