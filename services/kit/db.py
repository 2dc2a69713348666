"""SQLAlchemy engine setup and a thread pool for blocking DB work (migrations: services.kit.migrations).

Services use synchronous SQLAlchemy (psycopg 3 on PostgreSQL, sqlite3 for the
embedded default) and run it off the event loop through `Database.run`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DisconnectionError, SQLAlchemyError

from services.kit.startup import StartupError

log = logging.getLogger(__name__)
T = TypeVar("T")


def make_engine(url: str, *, pool_size: int = 10, echo: bool = False) -> Engine:
    """Build an engine for `url` (postgresql+psycopg://... or sqlite:///path).

    Nothing connects here; call `check_connection` to fail fast at start-up.
    """
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise StartupError(f"database URL is not valid: {exc}") from None
    if parsed.get_backend_name() == "sqlite":
        engine = sa.create_engine(
            parsed,
            echo=echo,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=pool_size,
            max_overflow=0,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()
            # pysqlite opens transactions lazily by itself; our BEGIN IMMEDIATE does it instead.
            dbapi_conn.isolation_level = None

        @event.listens_for(engine, "begin")
        def _sqlite_begin_immediate(conn: Connection) -> None:
            # One writer at a time, taken at BEGIN: no lost updates without FOR UPDATE.
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    if parsed.get_backend_name() != "postgresql":
        raise StartupError(f"unsupported database backend {parsed.get_backend_name()!r}")
    engine = sa.create_engine(
        parsed,
        echo=echo,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_recycle=1800,
        connect_args={"connect_timeout": 5, "application_name": "adsmon"},
    )
    _ping_when_idle(engine)
    return engine


# A pooled connection back in use within this many seconds is not pinged: under load (the ledger checks one out
# per batch) a ping per checkout cost a round trip and ~0.1 ms of CPU each time.
PING_AFTER_IDLE_SECONDS = 1.0


def _ping_when_idle(engine: Engine) -> None:
    """pool_pre_ping, for connections idle longer than PING_AFTER_IDLE_SECONDS only: a connection that failed its
    ping is replaced (DisconnectionError makes the pool connect anew); one that broke within the second fails its
    statement, which invalidates it (and the pool's older connections)."""

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_conn: Any, record: Any) -> None:
        record.info["checked_in_at"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("checked_in_at")
        if since is None or time.monotonic() - since < PING_AFTER_IDLE_SECONDS:
            return  # new, or just used
        try:
            alive = engine.dialect.do_ping(dbapi_conn)
        except Exception as exc:  # the dialect's error for a dead connection
            raise DisconnectionError(f"pooled connection failed its ping: {type(exc).__name__}") from exc
        if not alive:
            raise DisconnectionError("pooled connection failed its ping")


def is_postgres(engine_or_conn: Engine | Connection) -> bool:
    return engine_or_conn.dialect.name == "postgresql"


def check_connection(engine: Engine) -> None:
    """Connect once; raise StartupError with a one-line reason if we cannot."""
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
        where = engine.url.render_as_string(hide_password=True)
        raise StartupError(f"database unreachable at {where}: {reason}") from None


class Database:
    """An engine plus a bounded thread pool so async servicers can run blocking DB work."""

    def __init__(self, engine: Engine, *, workers: int | None = None) -> None:
        self.engine = engine
        size = workers or max(4, engine.pool.size() if hasattr(engine.pool, "size") else 4)
        self._executor = ThreadPoolExecutor(max_workers=size, thread_name_prefix="db")

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(*args)` on the DB thread pool and await its result."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=False)
        self.engine.dispose()
