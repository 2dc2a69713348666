"""How ads' repositories reach the database inside one unit of work: reads answered at once, writes queued.

PlaceBid is two short transactions; statement by statement each cost a round trip and SQLAlchemy's per-call
work (building and compiling `insert().values(...)` every time). Here the statements are SQLAlchemy Core
constructs built once (named bind parameters) and, on PostgreSQL, sent as their compiled text through a
psycopg pipeline:

- `write` needs no answer: in a transaction the unit of work owns on PostgreSQL it is queued, and the queue
  goes out in the round trip of the next read, or with the COMMIT (`commit`); elsewhere (SQLite, or a
  transaction someone else owns, such as the idempotent consumer's) it runs at once. Queued writes run in the
  order given and before anything sent after them (the engine's `before_execute` hook flushes them first when
  another repository runs SQLAlchemy statements of its own), so a read always sees every earlier write;
- `prefetch` queues a read whose rows come back with the next round trip (the auction's lock and its bids
  travel with the PlaceBid request's claim);
- a queued insert whose key exists fails the transaction at the flush: `conflict` names the error to raise
  instead (the unit of work then rolls back, as `insert_new`'s caller would have).

Statements sent in one pipeline run one after the other on the server, each with its own snapshot (READ
COMMITTED), exactly as if sent one by one: a read queued after a `FOR UPDATE` sees what the lock holder
committed.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from psycopg.rows import dict_row
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql.expression import Executable

from services.kit import bulk
from services.kit.db import is_postgres
from services.kit.sqltext import compiled as _sql
from services.kit.sqltext import params_for as _params

Row = Mapping[str, Any]
_HOOKED: weakref.WeakSet[Engine] = weakref.WeakSet()
_INFO_KEY = "ads_statements"


class _Rows:
    """Rows queued for one multi-row INSERT (`kit.bulk`)."""

    def __init__(self, table: sa.Table, rows: list[dict[str, Any]]) -> None:
        self.table, self.rows = table, rows

    def fits(self, table: sa.Table, rows: list[dict[str, Any]]) -> bool:
        return table is self.table and rows[0].keys() == self.rows[0].keys()


class Prefetched:
    """A queued read: its rows once the round trip that carried it is back."""

    def __init__(self) -> None:
        self.rows: list[Row] | None = None


class Statements:
    """Reads and writes of one unit of work on `conn` (see the module docstring). `queue`: whether this unit
    of work owns the transaction (then its writes may wait for the COMMIT)."""

    def __init__(self, conn: Connection, *, queue: bool) -> None:
        self.conn = conn
        self.pg = is_postgres(conn)
        self.queued = queue and self.pg
        self._queue: list[tuple[str, Any, Prefetched | None]] = []  # in order: writes (None) and reads
        self._conflicts: dict[str, Callable[[], Exception]] = {}
        if self.queued:
            _hook(conn.engine)
            conn.info[_INFO_KEY] = self

    # -- reads -------------------------------------------------------------------------------------

    def read(self, stmt: Executable, params: Mapping[str, Any] | None = None) -> list[Row]:
        """Run a query now (after every queued write and prefetch) and return its rows."""
        if not self.pg:
            return [dict(r) for r in self.conn.execute(stmt, dict(params or {})).mappings()]
        got = Prefetched()
        sql, fixed = _sql(stmt, self.conn)
        self._queue.append((sql, _params(fixed, params or {}), got))
        self.flush()
        assert got.rows is not None
        return got.rows

    def prefetch(self, stmt: Executable, params: Mapping[str, Any] | None = None) -> Prefetched | None:
        """Queue a query for the next round trip (PostgreSQL); None where it is not worth it (run `read`)."""
        if not self.pg:
            return None
        got = Prefetched()
        sql, fixed = _sql(stmt, self.conn)
        self._queue.append((sql, _params(fixed, params or {}), got))
        return got

    # -- writes ------------------------------------------------------------------------------------

    def write(self, stmt: Executable, params: Mapping[str, Any] | Sequence[Mapping[str, Any]], *,
              conflict: Callable[[], Exception] | None = None) -> None:
        """A statement whose answer nobody needs: queued (PostgreSQL, own transaction) or run at once. Several
        parameter sets run it once each. `conflict`: the error a unique violation of the statement's table
        turns into."""
        if not self.queued:
            self.conn.execute(stmt, params if isinstance(params, Mapping) else list(params))
            return
        sql, fixed = _sql(stmt, self.conn)
        for p in params if isinstance(params, Sequence) else [params]:
            self._queue.append((sql, _params(fixed, p), None))
        if conflict is not None:
            self._conflicts[stmt.table.name] = conflict  # type: ignore[attr-defined]

    def write_rows(self, table: sa.Table, rows: list[dict[str, Any]]) -> None:
        """INSERT `rows` (dicts with the same keys): one statement on PostgreSQL (`kit.bulk`), queued."""
        if not rows:
            return
        if not self.queued:
            if self.pg:
                bulk.pg_insert_rows(self.conn, table, rows)
            else:
                self.conn.execute(table.insert(), rows)
            return
        last = self._queue[-1] if self._queue else None
        if last is not None and isinstance(last[1], _Rows) and last[1].fits(table, rows):
            last[1].rows.extend(rows)  # the outbox rows of one transaction: one statement
        else:
            self._queue.append(("", _Rows(table, list(rows)), None))

    # -- sending -----------------------------------------------------------------------------------

    @property
    def pending(self) -> bool:
        return bool(self._queue)

    def flush(self, *, commit: bool = False) -> None:
        """Send the queue (and the COMMIT) in one round trip; the prefetched reads get their rows."""
        if not self.pending and not commit:
            return
        queue, self._queue = self._queue, []
        cursors = []
        try:
            with bulk.pg_pipeline(self.conn) as p:
                for sql, params, got in queue:
                    if isinstance(params, _Rows):
                        p.insert_rows(params.table, params.rows)
                    elif got is None:
                        p.execute(sql, params)
                    else:
                        cursors.append((p.query(sql, params, row_factory=dict_row), got))
                if commit:
                    p.execute("COMMIT")  # a statement of the pipeline: no round trip of its own
        except sa.exc.IntegrityError as exc:
            table = getattr(getattr(exc.orig, "diag", None), "table_name", None)
            conflict = self._conflicts.get(table or "")
            if conflict is not None:
                raise conflict() from exc
            raise
        for cursor, got in cursors:
            got.rows = cursor.fetchall()

    def commit(self) -> None:
        """Queued writes and COMMIT in one round trip (PostgreSQL, own transaction), then SQLAlchemy's
        commit, which finds psycopg idle and only ends its own transaction."""
        if self.queued:
            self.flush(commit=True)
        self.conn.commit()

    def close(self) -> None:
        """The unit of work is over: whatever is still queued is dropped (a rollback)."""
        self._queue = []
        self.conn.info.pop(_INFO_KEY, None)


def _hook(engine: Engine) -> None:
    """Flush a unit of work's queue before any statement another repository sends on the same connection."""
    if engine in _HOOKED:
        return
    _HOOKED.add(engine)

    @sa.event.listens_for(engine, "before_execute")
    def _flush_first(conn: Connection, *args: Any) -> None:
        statements = conn.info.get(_INFO_KEY)
        if statements is not None and statements.pending:
            statements.flush()
