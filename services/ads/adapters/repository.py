"""SQLAlchemy Core repositories and the unit of work for auctions and badges (PostgreSQL and SQLite)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from adsmon.events.v1.event_pb2 import Event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine, RowMapping

from services.ads.adapters.searches import SqlSearchCountRepository
from services.ads.adapters.statements import Prefetched, Statements
from services.ads.adapters.tables import TS, auctions, badge_charges, badge_prices, badges, bids, requests, steps
from services.ads.domain.auction import (
    Auction,
    AuctionStatus,
    Bid,
    BidState,
    CloseReason,
    SettlementStep,
    StepAction,
)
from services.ads.domain.badge import Badge, BadgeState, Charge, StopReason
from services.ads.service_layer import unit_of_work as ports
from services.kit import outbox
from services.kit.db import is_postgres
from services.kit.uow import SqlAlchemyUnitOfWork


def aware(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes: they were written in UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def _at(value: datetime | None) -> datetime:
    result = aware(value)
    assert result is not None
    return result


def insert_new(conn: Connection, table: sa.Table, values: dict[str, Any]) -> bool:
    """INSERT unless the key exists (no savepoint round trips); False if it existed.

    `preserve_rowcount`: SQLAlchemy closes an INSERT's cursor at once, and psycopg's rowcount then reads -1
    (true), which made every insert look new on PostgreSQL."""
    dialect = postgresql if is_postgres(conn) else sqlite
    result = conn.execute(dialect.insert(table).values(**values).on_conflict_do_nothing(),
                          execution_options={"preserve_rowcount": True})
    return result.rowcount == 1


def _bid_row(bid: Bid) -> dict[str, Any]:
    return {"bid_id": bid.bid_id, "job_id": bid.job_id, "proposal_id": bid.proposal_id,
            "freelancer_id": bid.freelancer_id, "amount": bid.amount, "placed_at": bid.placed_at, "seq": bid.seq,
            "state": bid.state.value, "hold_id": bid.hold_id, "pending_amount": bid.pending_amount,
            "raises": bid.raises, "committed": bid.committed, "exhausted": bid.exhausted, "opens": bid.opens,
            "views": bid.views, "updated_at": bid.updated_at or bid.placed_at, "request_id": bid.request_id}


_BID_COLUMNS = [c.label(f"b_{c.name}") for c in bids.c]  # bids' columns beside auctions' in one joined row


def _bid(row: Mapping[Any, Any]) -> Bid:
    return Bid(bid_id=row["bid_id"], job_id=row["job_id"], proposal_id=row["proposal_id"],
               freelancer_id=row["freelancer_id"], amount=row["amount"], placed_at=_at(row["placed_at"]),
               seq=row["seq"], state=BidState(row["state"]), hold_id=row["hold_id"],
               pending_amount=row["pending_amount"], raises=row["raises"], committed=row["committed"],
               exhausted=row["exhausted"], opens=row["opens"], views=row["views"],
               updated_at=aware(row["updated_at"]), request_id=row["request_id"])


def _auction_row(a: Auction) -> dict[str, Any]:
    return {"job_id": a.job_id, "placebo": a.placebo, "status": a.status.value, "opened_at": a.opened_at,
            "closes_at": a.closes_at, "closed_at": a.closed_at,
            "close_reason": a.close_reason.value if a.close_reason else None}


def _values(table: sa.Table, *, skip: str = "") -> dict[str, Any]:
    """Every column of `table` (but `skip`) as a bind parameter of its own name and type."""
    return {c.name: sa.bindparam(c.name, type_=c.type) for c in table.c if c.name != skip}


# The statements of the hot paths, built once (compiled once per dialect: statements.py).
_LOCK_AUCTION = sa.select(auctions).where(auctions.c.job_id == sa.bindparam("job_id")).with_for_update()
_AUCTION_BIDS = sa.select(bids).where(bids.c.job_id == sa.bindparam("job_id"))
_AUCTION_WITH_BIDS = (sa.select(auctions, *_BID_COLUMNS)
                      .select_from(auctions.outerjoin(bids, bids.c.job_id == auctions.c.job_id))
                      .where(auctions.c.job_id == sa.bindparam("job_id")))
_INSERT_AUCTION = auctions.insert().values(_values(auctions))
_UPDATE_AUCTION = (auctions.update().where(auctions.c.job_id == sa.bindparam("key"))
                   .values(_values(auctions, skip="job_id")))
_INSERT_BID = bids.insert().values(_values(bids))
_UPDATE_BID = bids.update().where(bids.c.bid_id == sa.bindparam("key")).values(_values(bids, skip="bid_id"))
_DELETE_BID = bids.delete().where(bids.c.bid_id == sa.bindparam("key"))


class SqlAuctionRepository(ports.AuctionRepository):
    def __init__(self, sql: Statements) -> None:
        self.sql = sql
        self.conn = sql.conn
        self._loaded: dict[str, dict[str, dict[str, Any]]] = {}  # job -> bid_id -> row as loaded
        self._rows: dict[str, dict[str, Any]] = {}  # job -> auction row as loaded (unchanged rows are not written)
        self._prefetched: dict[str, tuple[Prefetched, Prefetched]] = {}

    def prefetch(self, job_id: str) -> None:
        """Queue `get(job_id)`'s locked read for the next round trip (PostgreSQL): the claim of a PlaceBid
        request carries it."""
        auction = self.sql.prefetch(_LOCK_AUCTION, {"job_id": job_id})
        if auction is not None:
            bid_rows = self.sql.prefetch(_AUCTION_BIDS, {"job_id": job_id})
            assert bid_rows is not None
            self._prefetched[job_id] = (auction, bid_rows)

    def get(self, job_id: str, *, lock: bool = True) -> Auction | None:
        """The auction and its bids. Locked: the auction row first (FOR UPDATE), then the bids in a second
        statement, whose snapshot is taken after the lock is granted (the two travel in one round trip on
        PostgreSQL). One joined statement would hand back the bids of the snapshot it started with: a
        transaction that waited for the lock would then miss or overwrite what the lock holder committed, as
        READ COMMITTED re-checks only the locked row. Unlocked reads are one joined statement."""
        params = {"job_id": job_id}
        if lock:
            prefetched = self._prefetched.pop(job_id, None)
            if prefetched is None:
                self.prefetch(job_id)
                prefetched = self._prefetched.pop(job_id, None)
            if prefetched is not None:
                if prefetched[0].rows is None:
                    self.sql.flush()
                found, bid_rows = prefetched[0].rows, prefetched[1].rows
            else:
                found = self.sql.read(_LOCK_AUCTION, params)
                bid_rows = self.sql.read(_AUCTION_BIDS, params) if found else []
            assert found is not None and bid_rows is not None
            if not found:
                return None
            row = found[0]
            loaded = [_bid(r) for r in bid_rows]
        else:
            rows = self.sql.read(_AUCTION_WITH_BIDS, params)
            if not rows:
                return None
            row = rows[0]
            loaded = [_bid({c.name: r[f"b_{c.name}"] for c in bids.c}) for r in rows if r["b_bid_id"] is not None]
        self._loaded[job_id] = {b.bid_id: _bid_row(b) for b in loaded}
        auction = Auction(job_id=row["job_id"], placebo=row["placebo"], opened_at=_at(row["opened_at"]),
                       closes_at=_at(row["closes_at"]), status=AuctionStatus(row["status"]),
                       closed_at=aware(row["closed_at"]),
                       close_reason=CloseReason(row["close_reason"]) if row["close_reason"] else None,
                       bids={b.proposal_id: b for b in loaded})
        self._rows[job_id] = _auction_row(auction)
        return auction

    def add(self, auction: Auction) -> None:
        row = _auction_row(auction)
        if self.sql.queued:  # a job whose auction appeared meanwhile fails the flush: RequestInProgress then
            self.sql.write(_INSERT_AUCTION, row, conflict=lambda: ports.RequestInProgress(f"job:{auction.job_id}"))
        elif not insert_new(self.conn, auctions, row):
            raise ports.RequestInProgress(f"job:{auction.job_id}")
        self._loaded[auction.job_id] = {}
        self._rows[auction.job_id] = row
        self._write_bids(auction)

    def save(self, auction: Auction) -> None:
        row = _auction_row(auction)
        if self._rows.get(auction.job_id) != row:
            self.sql.write(_UPDATE_AUCTION, {**row, "key": auction.job_id})
            self._rows[auction.job_id] = row
        self._write_bids(auction)

    def _write_bids(self, auction: Auction) -> None:
        before = self._loaded.get(auction.job_id, {})
        now = {b.bid_id: _bid_row(b) for b in auction.bids.values()}
        new = [r for bid_id, r in now.items() if bid_id not in before]
        if new:
            self.sql.write(_INSERT_BID, new)
        changed = [{**r, "key": bid_id} for bid_id, r in now.items() if bid_id in before and before[bid_id] != r]
        if changed:
            self.sql.write(_UPDATE_BID, changed)
        gone = [{"key": bid_id} for bid_id in before if bid_id not in now]
        if gone:
            self.sql.write(_DELETE_BID, gone)
        self._loaded[auction.job_id] = now

    def claim_due(self, now: datetime, limit: int) -> list[str]:
        query = (sa.select(auctions.c.job_id).where(auctions.c.status == "OPEN", auctions.c.closes_at <= now)
                 .order_by(auctions.c.closes_at).limit(limit).with_for_update(skip_locked=True))
        return list(self.conn.execute(query).scalars())

    def pending_bids(self, older_than: datetime, limit: int) -> list[tuple[str, str]]:
        query = (sa.select(bids.c.job_id, bids.c.proposal_id).join(auctions, auctions.c.job_id == bids.c.job_id)
                 .where(sa.or_(bids.c.state == "PENDING", bids.c.pending_amount > 0),
                        sa.or_(bids.c.updated_at <= older_than, auctions.c.status != "OPEN"))
                 .order_by(bids.c.updated_at).limit(limit))
        return [(r[0], r[1]) for r in self.conn.execute(query)]

    def count_open(self) -> int:
        return self.conn.execute(sa.select(sa.func.count()).select_from(auctions)
                                 .where(auctions.c.status == "OPEN")).scalar_one()


def _step(row: RowMapping) -> SettlementStep:
    return SettlementStep(job_id=row["job_id"], bid_id=row["bid_id"], proposal_id=row["proposal_id"],
                          freelancer_id=row["freelancer_id"], hold_id=row["hold_id"],
                          action=StepAction(row["action"]), amount=row["amount"])


_INSERT_STEP = steps.insert().values(_values(steps))
_LOCK_PENDING_STEPS = (sa.select(steps.c.bid_id)
                       .where(steps.c.job_id == sa.bindparam("job_id"), steps.c.status == "PENDING")
                       .order_by(steps.c.bid_id).with_for_update())
_STEP_DONE = (steps.update().where(steps.c.bid_id == sa.bindparam("key"))
              .values(status="DONE", outcome=sa.bindparam("outcome"), done_at=sa.bindparam("done_at", type_=TS),
                      last_error=None))
_STEP_LATER = (steps.update().where(steps.c.bid_id == sa.bindparam("key"))
               .values(next_attempt_at=sa.bindparam("at", type_=TS), last_error=sa.bindparam("error")))
_STEP_COLUMNS = [c.name for c in steps.c]


class SqlStepRepository(ports.StepRepository):
    def __init__(self, sql: Statements) -> None:
        self.sql = sql
        self.conn = sql.conn
        self._prefetched: dict[str, Prefetched | None] = {}

    def add(self, new: list[SettlementStep], now: datetime) -> None:
        if new:
            rows = [{**{f.name: getattr(s, f.name) for f in dataclasses.fields(s)}, "action": s.action.value,
                     "status": "PENDING", "attempts": 0, "next_attempt_at": now, "created_at": now}
                    for s in new]
            self.sql.write(_INSERT_STEP, [{c: r.get(c) for c in _STEP_COLUMNS} for r in rows])

    def claim(self, now: datetime, lease: timedelta, limit: int) -> list[ports.ClaimedStep]:
        query = (sa.select(steps).where(steps.c.status == "PENDING", steps.c.next_attempt_at <= now)
                 .order_by(steps.c.next_attempt_at).limit(limit).with_for_update(skip_locked=True))
        rows = self.conn.execute(query).mappings().all()
        if rows:
            self.conn.execute(steps.update().where(steps.c.bid_id.in_([r["bid_id"] for r in rows]))
                              .values(next_attempt_at=now + lease, attempts=steps.c.attempts + 1))
        return [ports.ClaimedStep(_step(r), r["attempts"] + 1) for r in rows]

    def prefetch_pending(self, job_id: str) -> None:
        self._prefetched[job_id] = self.sql.prefetch(_LOCK_PENDING_STEPS, {"job_id": job_id})

    def pending_of(self, job_id: str) -> set[str]:
        prefetched = self._prefetched.pop(job_id, None)
        if prefetched is not None:
            if prefetched.rows is None:
                self.sql.flush()
            rows = prefetched.rows
        else:
            rows = self.sql.read(_LOCK_PENDING_STEPS, {"job_id": job_id})
        assert rows is not None
        return {r["bid_id"] for r in rows}

    def done(self, bid_id: str, outcome: str, now: datetime) -> None:
        self.sql.write(_STEP_DONE, {"key": bid_id, "outcome": outcome, "done_at": now})

    def retry_later(self, bid_id: str, error: str, at: datetime) -> None:
        self.sql.write(_STEP_LATER, {"key": bid_id, "at": at, "error": error[:300]})

    def release_unsent_captures(self, job_id: str) -> int:
        result = self.conn.execute(steps.update().where(
            steps.c.job_id == job_id, steps.c.status == "PENDING", steps.c.action == "CAPTURE",
            steps.c.attempts == 0).values(action="RELEASE", amount=0))
        return result.rowcount or 0

    def backlog(self) -> ports.Backlog:
        count, oldest = self.conn.execute(sa.select(sa.func.count(), sa.func.min(steps.c.created_at))
                                          .where(steps.c.status == "PENDING")).one()
        return ports.Backlog(count, aware(oldest))


_GET_REQUEST = sa.select(requests).where(requests.c.request_id == sa.bindparam("request_id"))
_CLAIM_REQUEST = (postgresql.insert(requests).values(_values(requests)).on_conflict_do_nothing()
                  .returning(requests.c.request_id))  # PostgreSQL: the row count of a pipelined insert
_COMPLETE_REQUEST = (requests.update().where(requests.c.request_id == sa.bindparam("key"))
                     .values(status="DONE", answer=sa.bindparam("answer")))
_FORGET_REQUEST = requests.delete().where(requests.c.request_id == sa.bindparam("key"),
                                          requests.c.status == "PENDING")


class SqlRequestRepository(ports.RequestRepository):
    def __init__(self, sql: Statements) -> None:
        self.sql = sql
        self.conn = sql.conn

    def get(self, request_id: str) -> ports.StoredRequest | None:
        found = self.sql.read(_GET_REQUEST, {"request_id": request_id})
        if not found:
            return None
        row = found[0]
        return ports.StoredRequest(row["method"], row["fingerprint"], row["status"] == "DONE", row["answer"])

    def _insert_new(self, row: dict[str, Any]) -> bool:
        if self.sql.pg:
            return bool(self.sql.read(_CLAIM_REQUEST, row))
        return insert_new(self.conn, requests, row)

    def add(self, request_id: str, method: str, fingerprint: str, now: datetime, answer: str | None = None) -> None:
        if not self._insert_new({"request_id": request_id, "method": method, "fingerprint": fingerprint,
                                 "status": "DONE" if answer is not None else "PENDING", "answer": answer,
                                 "created_at": now}):
            raise ports.RequestInProgress(request_id)

    def claim(self, request_id: str, method: str, fingerprint: str, now: datetime) -> ports.StoredRequest | None:
        if self._insert_new({"request_id": request_id, "method": method, "fingerprint": fingerprint,
                             "status": "PENDING", "answer": None, "created_at": now}):
            return None
        stored = self.get(request_id)
        if stored is None:  # recorded and forgotten (a refused attempt) between the two statements
            raise ports.RequestInProgress(request_id)
        return stored

    def complete(self, request_id: str, answer: str) -> None:
        self.sql.write(_COMPLETE_REQUEST, {"key": request_id, "answer": answer})

    def forget(self, request_id: str) -> None:
        self.sql.write(_FORGET_REQUEST, {"key": request_id})


def _badge_row(b: Badge) -> dict[str, Any]:
    return {"freelancer_id": b.freelancer_id, "state": b.state.value, "category": b.category,
            "badge_id": b.badge_id, "weekly_max": b.weekly_max, "weekly_price": b.weekly_price,
            "started_at": b.started_at, "stopped_at": b.stopped_at,
            "stop_reason": b.stop_reason.value if b.stop_reason else None, "week_started_at": b.week_started_at,
            "charged_this_week": b.charged_this_week, "charges": b.charges, "last_charge_at": b.last_charge_at,
            "next_charge_at": b.next_charge_at}


class SqlBadgeRepository(ports.BadgeRepository):
    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._known: set[str] = set()

    def get(self, freelancer_id: str, *, lock: bool = True) -> Badge | None:
        query = sa.select(badges).where(badges.c.freelancer_id == freelancer_id)
        row = self.conn.execute(query.with_for_update() if lock else query).mappings().first()
        if row is None:
            return None
        self._known.add(freelancer_id)
        return Badge(freelancer_id=row["freelancer_id"], state=BadgeState(row["state"]), category=row["category"],
                     badge_id=row["badge_id"], weekly_max=row["weekly_max"], weekly_price=row["weekly_price"],
                     started_at=aware(row["started_at"]), stopped_at=aware(row["stopped_at"]),
                     stop_reason=StopReason(row["stop_reason"]) if row["stop_reason"] else None,
                     week_started_at=aware(row["week_started_at"]), charged_this_week=row["charged_this_week"],
                     charges=row["charges"], last_charge_at=aware(row["last_charge_at"]),
                     next_charge_at=aware(row["next_charge_at"]))

    def save(self, badge: Badge) -> None:
        row = _badge_row(badge)
        if badge.freelancer_id in self._known:
            self.conn.execute(badges.update().where(badges.c.freelancer_id == badge.freelancer_id).values(
                **{k: v for k, v in row.items() if k != "freelancer_id"}))
        else:
            if not insert_new(self.conn, badges, row):
                raise ports.RequestInProgress(f"badge:{badge.freelancer_id}")
            self._known.add(badge.freelancer_id)

    def claim_due(self, now: datetime, limit: int) -> list[str]:
        query = (sa.select(badges.c.freelancer_id).where(badges.c.state == "ACTIVE", badges.c.next_charge_at <= now)
                 .order_by(badges.c.next_charge_at).limit(limit).with_for_update(skip_locked=True))
        return list(self.conn.execute(query).scalars())

    def active_in(self, category: str) -> list[str]:
        query = (sa.select(badges.c.freelancer_id).where(badges.c.state == "ACTIVE", badges.c.category == category)
                 .order_by(badges.c.freelancer_id).with_for_update())
        return list(self.conn.execute(query).scalars())

    def active_counts(self) -> dict[str, int]:
        query = (sa.select(badges.c.category, sa.func.count()).where(badges.c.state == "ACTIVE")
                 .group_by(badges.c.category))
        return {r[0]: r[1] for r in self.conn.execute(query)}


def _charge(row: RowMapping) -> Charge:
    return Charge(badge_id=row["badge_id"], freelancer_id=row["freelancer_id"], seq=row["seq"],
                  due_at=_at(row["due_at"]), weekly_price=row["weekly_price"], amount=row["amount"])


class SqlChargeRepository(ports.ChargeRepository):
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def add(self, charge: Charge, now: datetime) -> None:
        self.conn.execute(badge_charges.insert().values(
            request_id=charge.request_id, badge_id=charge.badge_id, seq=charge.seq,
            freelancer_id=charge.freelancer_id, amount=charge.amount, due_at=charge.due_at,
            weekly_price=charge.weekly_price, status="PENDING", attempts=0, next_attempt_at=now))

    def claim(self, now: datetime, lease: timedelta, limit: int) -> list[Charge]:
        query = (sa.select(badge_charges).where(badge_charges.c.status == "PENDING",
                                                badge_charges.c.next_attempt_at <= now)
                 .order_by(badge_charges.c.next_attempt_at).limit(limit).with_for_update(skip_locked=True))
        rows = self.conn.execute(query).mappings().all()
        if rows:
            self.conn.execute(badge_charges.update()
                              .where(badge_charges.c.request_id.in_([r["request_id"] for r in rows]))
                              .values(next_attempt_at=now + lease, attempts=badge_charges.c.attempts + 1))
        return [_charge(r) for r in rows]

    def lock(self, request_id: str, *, wait: bool) -> str | None:
        query = (sa.select(badge_charges.c.status).where(badge_charges.c.request_id == request_id)
                 .with_for_update(skip_locked=not wait))
        return self.conn.execute(query).scalar()

    def resolve(self, request_id: str, status: str, transaction_id: str | None, now: datetime) -> None:
        self.conn.execute(badge_charges.update().where(badge_charges.c.request_id == request_id)
                          .values(status=status, transaction_id=transaction_id, done_at=now))

    def retry_later(self, request_id: str, at: datetime) -> None:
        self.conn.execute(badge_charges.update().where(badge_charges.c.request_id == request_id)
                          .values(next_attempt_at=at))


class SqlPriceRepository(ports.PriceRepository):
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def all(self) -> dict[str, int]:
        return {r[0]: r[1] for r in self.conn.execute(sa.select(badge_prices.c.category,
                                                                badge_prices.c.weekly_price))}

    def get(self, category: str) -> int | None:
        return self.conn.execute(sa.select(badge_prices.c.weekly_price)
                                 .where(badge_prices.c.category == category)).scalar()

    def put(self, category: str, price: int, now: datetime, *, previous: int | None) -> bool:
        if previous is None:
            return insert_new(self.conn, badge_prices, {"category": category, "weekly_price": price,
                                                        "updated_at": now})
        result = self.conn.execute(badge_prices.update().where(badge_prices.c.category == category,
                                                               badge_prices.c.weekly_price == previous)
                                   .values(weekly_price=price, updated_at=now))
        return bool(result.rowcount)


def _open_repositories(uow: ports.AdsUnitOfWork, sql: Statements) -> None:
    conn = sql.conn
    uow.auctions = SqlAuctionRepository(sql)
    uow.steps = SqlStepRepository(sql)
    uow.requests = SqlRequestRepository(sql)
    uow.badges = SqlBadgeRepository(conn)
    uow.charges = SqlChargeRepository(conn)
    uow.prices = SqlPriceRepository(conn)
    uow.search_counts = SqlSearchCountRepository(conn)


class SqlAlchemyAdsUnitOfWork(SqlAlchemyUnitOfWork, ports.AdsUnitOfWork):
    """On PostgreSQL the repositories' writes and the outbox rows wait for the next read or the COMMIT and
    travel with it (adapters/statements.py); on SQLite every statement runs at once."""

    def __init__(self, engine: Engine, *, after_commit: Callable[[], Any] | None = None) -> None:
        super().__init__(engine, after_commit=after_commit)
        self.sql: Statements | None = None

    def open_repositories(self, conn: Connection) -> None:
        self.sql = Statements(conn, queue=True)
        _open_repositories(self, self.sql)

    def publish(self, topic: str, event: Event) -> None:
        assert self.sql is not None, "the unit of work is used outside its `with` block"
        self.sql.write_rows(outbox.OUTBOX, outbox.outbox_rows([(topic, event)]))
        self._published += 1

    def commit(self) -> None:
        assert self.sql is not None, "the unit of work is used outside its `with` block"
        self.sql.commit()
        self.committed = True
        if self._published and self._after_commit is not None:
            self._after_commit()

    def __exit__(self, *exc: object) -> None:
        if self.sql is not None:  # what is still queued was never sent: dropped with the rollback
            self.sql.close()
            self.sql = None
        super().__exit__(*exc)


class BoundAdsUnitOfWork(ports.AdsUnitOfWork):
    """The repositories over a transaction someone else owns (the idempotent consumer's): `commit` only
    marks the work done; the owner commits it together with its processed_events row. Statements run at
    once (the owner's commit is not ours to carry them)."""

    def __init__(self, conn: Connection) -> None:
        super().__init__()
        self.conn = conn
        _open_repositories(self, Statements(conn, queue=False))

    def publish(self, topic: str, event: Event) -> None:
        outbox.add(self.conn, topic, event)

    def commit(self) -> None:
        self.committed = True

    def rollback(self) -> None:
        """The owner's transaction rolls back when the handler raises."""
