"""The unit of work every use case runs in: one transaction, its repositories, its outbox rows.

The cosmicpython shape (see services/README.md). A service subclasses
`SqlAlchemyUnitOfWork` and builds its repositories over `self.conn` in
`open_repositories`; a use case is one function

    def place_bid(uow: AdsUnitOfWork, cmd: commands.PlaceBid, now: datetime) -> Bid:
        with uow:
            auction = uow.auctions.get(cmd.job_id)       # repository, not SQL
            bid = auction.place(...)                      # the domain decides
            uow.auctions.save(auction)
            uow.publish(ADS_EVENTS_TOPIC, event)          # outbox row, same transaction
            uow.commit()                                  # then after-commit hooks (relay wake)
        return bid

Leaving the `with` block without `commit()` rolls back, also on an
exception. Tests pass a fake of the same contract (`publish` records the
events, `commit` sets `committed`).
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any, Self

from adsmon.events.v1.event_pb2 import Event
from sqlalchemy.engine import Connection, Engine

from services.kit import outbox


class AbstractUnitOfWork(abc.ABC):
    """One atomic change: repositories read and write inside it; `commit` makes it all durable at once."""

    def __init__(self) -> None:
        self.committed = False

    def __enter__(self) -> Self:
        self.committed = False
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.committed:
            self.rollback()

    @abc.abstractmethod
    def publish(self, topic: str, event: Event) -> None:
        """Queue `event` on `topic`: it is relayed if and only if this unit of work commits."""

    @abc.abstractmethod
    def commit(self) -> None: ...

    @abc.abstractmethod
    def rollback(self) -> None: ...


class SqlAlchemyUnitOfWork(AbstractUnitOfWork):
    """A connection and transaction on `engine`; `after_commit` runs once the transaction is durable."""

    def __init__(self, engine: Engine, *, after_commit: Callable[[], Any] | None = None) -> None:
        super().__init__()
        self.engine = engine
        self._after_commit = after_commit
        self._conn: Connection | None = None
        self._published = 0

    @property
    def conn(self) -> Connection:
        if self._conn is None:
            raise RuntimeError("the unit of work is used outside its `with` block")
        return self._conn

    def open_repositories(self, conn: Connection) -> None:
        """Build the service's repositories over `conn` (override)."""

    def __enter__(self) -> Self:
        super().__enter__()
        self._conn = self.engine.connect()
        self._conn.begin()
        self._published = 0
        self.open_repositories(self._conn)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            super().__exit__(*exc)
        finally:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def publish(self, topic: str, event: Event) -> None:
        outbox.add(self.conn, topic, event)
        self._published += 1

    def commit(self) -> None:
        self.conn.commit()
        self.committed = True
        if self._published and self._after_commit is not None:
            self._after_commit()

    def rollback(self) -> None:
        if self._conn is not None:
            self._conn.rollback()
