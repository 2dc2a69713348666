"""Many rows in one statement on PostgreSQL, whatever their number.

psycopg's executemany sends one statement per row, and array parameters
(``unnest(%s::text[], ...)``) are dumped element by element in Python. Here
the rows travel as one JSON document (encoded by the json module's C encoder)
and PostgreSQL turns it back into typed rows with ``json_populate_recordset``
against the table's own row type, so every column keeps its declared type.
The statement text depends only on the table and the column names, so psycopg
prepares it once and reuses it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection


def _default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()  # timestamptz input; a naive value is read in the session's time zone
    if isinstance(value, bytes | bytearray | memoryview):
        return "\\x" + bytes(value).hex()  # bytea's hex input format
    raise TypeError(f"cannot send {type(value).__name__} as a row value")


_encode = json.JSONEncoder(default=_default, separators=(",", ":"), ensure_ascii=False).encode


def rows_json(rows: list[dict[str, Any]]) -> str:
    return _encode(rows)


def _name(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def insert_sql(table: sa.Table, cols: Sequence[str], *, returning: str | None = None,
               on_conflict_do_nothing: bool = False) -> str:
    """The statement `pg_insert_rows` sends for rows with the keys `cols` (one JSON parameter)."""
    return _insert_sql(table, tuple(cols), returning, on_conflict_do_nothing)


def update_sql(table: sa.Table, key: str, cols: Sequence[str]) -> str:
    """UPDATE one row of `table` per JSON row (keys `cols`, including `key`), as one statement."""
    return _update_sql(table, key, tuple(cols))


# The texts depend only on the table and the column names: built once each (the hot path sends them per batch).
@lru_cache(maxsize=512)
def _insert_sql(table: sa.Table, cols: tuple[str, ...], returning: str | None, on_conflict_do_nothing: bool) -> str:
    names = ", ".join(_name(c) for c in cols)
    sql = (f"INSERT INTO {_name(table.name)} ({names}) SELECT {names} "
           f"FROM json_populate_recordset(NULL::{_name(table.name)}, %s::json)")
    if on_conflict_do_nothing:
        sql += " ON CONFLICT DO NOTHING"
    if returning:
        sql += f" RETURNING {_name(returning)}"
    return sql


@lru_cache(maxsize=512)
def _update_sql(table: sa.Table, key: str, cols: tuple[str, ...]) -> str:
    sets = ", ".join(f"{_name(c)} = v.{_name(c)}" for c in cols if c != key)
    return (f"UPDATE {_name(table.name)} AS t SET {sets} "
            f"FROM json_populate_recordset(NULL::{_name(table.name)}, %s::json) AS v "
            f"WHERE t.{_name(key)} = v.{_name(key)}")


@dataclass(frozen=True)
class Write:
    """Rows for one table: inserted (`key` None) or updating the rows whose `key` column matches."""

    table: sa.Table
    rows: list[dict[str, Any]]
    key: str | None = None

    def sql(self) -> str:
        cols = tuple(self.rows[0])
        return _insert_sql(self.table, cols, None, False) if self.key is None else _update_sql(self.table, self.key,
                                                                                                cols)


def combined_sql(main: str, writes: Sequence[str]) -> str:
    """`main` with `writes` as data-modifying CTEs: one statement, one parse, one execution.

    PostgreSQL runs every sub-statement on the same snapshot, so the writes must not depend on each other's
    rows (no row inserted and updated, no foreign key between them); they commit or fail together."""
    if not writes:
        return main
    return "WITH " + ", ".join(f"w{i} AS ({w})" for i, w in enumerate(writes)) + " " + main


def pg_insert_rows(conn: Connection, table: sa.Table, rows: list[dict[str, Any]], *,
                   returning: str | None = None, on_conflict_do_nothing: bool = False) -> list[Any]:
    """INSERT `rows` (dicts with the same keys, named after `table`'s columns) in one statement.

    With `returning`, the inserted rows' values of that column come back (with
    `on_conflict_do_nothing`, the rows skipped for a conflict are missing).
    """
    if not rows:
        return []
    sql = insert_sql(table, list(rows[0]), returning=returning, on_conflict_do_nothing=on_conflict_do_nothing)
    result = conn.exec_driver_sql(sql, (rows_json(rows),))
    return list(result.scalars()) if returning else []


class Pipeline:
    """Statements queued on one psycopg connection in pipeline mode: sent together, run in order.

    A cursor returned by `query` has its rows once the `pg_pipeline` block has ended."""

    def __init__(self, dbapi_conn: Any) -> None:
        self._dbapi = dbapi_conn
        self._sink: Any = None

    def query(self, sql: str, params: tuple[Any, ...] | dict[str, Any] | None = None, *,
              row_factory: Any = None) -> Any:
        """Queue a query; rows are named tuples unless `row_factory` (a psycopg row factory) says otherwise."""
        from psycopg.rows import namedtuple_row

        cur = self._dbapi.cursor(row_factory=row_factory or namedtuple_row)
        cur.execute(sql, params)
        return cur

    def execute(self, sql: str, params: tuple[Any, ...] | dict[str, Any] | None = None) -> None:
        if self._sink is None:
            self._sink = self._dbapi.cursor()
        self._sink.execute(sql, params)

    def insert_rows(self, table: sa.Table, rows: list[dict[str, Any]]) -> None:
        if rows:
            self.execute(insert_sql(table, list(rows[0])), (rows_json(rows),))

    def update_rows(self, table: sa.Table, key: str, rows: list[dict[str, Any]]) -> None:
        if rows:
            self.execute(update_sql(table, key, list(rows[0])), (rows_json(rows),))

    def commit(self) -> None:
        """COMMIT after the statements queued so far, in the same round trip (psycopg syncs the pipeline)."""
        self._dbapi.commit()

    def write_all(self, writes: Sequence[Write], returning: Write | None = None,
                  returning_column: str = "", on_conflict_do_nothing: bool = False) -> Any:
        """Every non-empty write in one statement (`combined_sql`); `returning`'s insert is its main statement
        and, with a `returning_column`, the returned cursor yields that column of the rows it inserted (else None)."""
        present = [w for w in writes if w.rows]
        if returning is not None and returning.rows:
            main = _insert_sql(returning.table, tuple(returning.rows[0]), returning_column, on_conflict_do_nothing)
            params = [*present, returning]
        elif present:
            main, present, params = present[-1].sql(), present[:-1], present
        else:
            return None
        sql = combined_sql(main, [w.sql() for w in present])
        args = tuple(rows_json(w.rows) for w in params)
        if returning_column and returning is not None and returning.rows:
            return self.query(sql, args)
        self.execute(sql, args)
        return None


@contextmanager
def pg_pipeline(conn: Connection) -> Iterator[Pipeline]:
    """Queue statements on `conn` (PostgreSQL, psycopg 3) and send them in one round trip when the block ends
    (the implicit BEGIN of a new transaction goes first, in a round trip of its own: psycopg syncs it, also in
    pipeline mode, as libpq's protocol trace shows). The server runs them one after the other, each with its
    own snapshot, as if sent one by one; the first error aborts the rest and is raised like SQLAlchemy's own
    (an OperationalError for a lost connection, which is then invalidated)."""
    import psycopg

    dbapi = conn.connection.dbapi_connection
    try:
        with dbapi.pipeline():  # type: ignore[union-attr]
            yield Pipeline(dbapi)
    except psycopg.Error as exc:
        invalidated = conn.dialect.is_disconnect(exc, dbapi, None)  # type: ignore[arg-type]
        if invalidated:
            conn.invalidate(exc)
        raise sa_exc.DBAPIError.instance(None, None, exc, psycopg.Error, connection_invalidated=invalidated,
                                         dialect=conn.dialect) from exc
