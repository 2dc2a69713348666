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
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
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


def pg_insert_rows(conn: Connection, table: sa.Table, rows: list[dict[str, Any]], *,
                   returning: str | None = None, on_conflict_do_nothing: bool = False) -> list[Any]:
    """INSERT `rows` (dicts with the same keys, named after `table`'s columns) in one statement.

    With `returning`, the inserted rows' values of that column come back (with
    `on_conflict_do_nothing`, the rows skipped for a conflict are missing).
    """
    if not rows:
        return []
    cols = ", ".join(_name(c) for c in rows[0])
    sql = (f"INSERT INTO {_name(table.name)} ({cols}) SELECT {cols} "
           f"FROM json_populate_recordset(NULL::{_name(table.name)}, %s::json)")
    if on_conflict_do_nothing:
        sql += " ON CONFLICT DO NOTHING"
    if returning:
        sql += f" RETURNING {_name(returning)}"
    result = conn.exec_driver_sql(sql, (rows_json(rows),))
    return list(result.scalars()) if returning else []


def pg_update_rows(conn: Connection, table: sa.Table, key: str, rows: list[dict[str, Any]]) -> None:
    """UPDATE one row of `table` per entry of `rows` (each has `key` and the columns to set), in one statement."""
    if not rows:
        return
    sets = ", ".join(f"{_name(c)} = v.{_name(c)}" for c in rows[0] if c != key)
    sql = (f"UPDATE {_name(table.name)} AS t SET {sets} "
           f"FROM json_populate_recordset(NULL::{_name(table.name)}, %s::json) AS v "
           f"WHERE t.{_name(key)} = v.{_name(key)}")
    conn.exec_driver_sql(sql, (rows_json(rows),))
