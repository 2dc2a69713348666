"""A SQLAlchemy Core statement compiled once to its dialect's text, for hot paths.

SQLAlchemy caches a statement's compilation by its cache key, but some
constructs have none: `postgresql.insert(...)` (with or without ON CONFLICT)
is `inherit_cache = False` in SQLAlchemy 2.0, so every execution compiles it
again (the engine logs `[no key]`); a billing purchase spent a tenth of its
interpreter time there. A statement built once at module level (named bind
parameters, explicit `.values(...)` so its column list does not follow each
call's keys) is compiled here once per dialect and run as driver SQL.

Driver SQL skips SQLAlchemy's bind processors: `execute` applies those a
statement's parameters have (none for strings, integers and datetimes on
psycopg; a check for booleans); `compiled` alone is for callers that send
only values psycopg adapts natively.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, cast

from sqlalchemy.engine import Connection, CursorResult
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement, Executable

from services.kit.db import is_postgres

_Processors = dict[str, Callable[[Any], Any]]
_COMPILED: dict[tuple[Executable, str], tuple[str, dict[str, Any], _Processors]] = {}  # (construct, dialect)


def compiled(stmt: Executable, conn: Connection) -> tuple[str, dict[str, Any]]:
    """The statement's text for `conn`'s dialect and the values it fixes itself (`.values(status="DONE")` is a
    bind parameter with a value). Compiled on first use; statements must be long-lived module-level constructs."""
    sql, fixed, _ = _compiled(stmt, conn)
    return sql, fixed


def _compiled(stmt: Executable, conn: Connection) -> tuple[str, dict[str, Any], _Processors]:
    key = (stmt, conn.dialect.name)
    found = _COMPILED.get(key)
    if found is None:
        done = cast(ClauseElement, stmt).compile(dialect=conn.dialect)
        sql = str(done)
        if "POSTCOMPILE" in sql:
            raise ValueError(f"a statement with expanding parameters cannot be sent as text: {sql}")
        binds = cast(SQLCompiler, done).binds
        processors: _Processors = {name: proc for name, bind in binds.items()
                                   if (proc := bind.type._cached_bind_processor(conn.dialect)) is not None}
        fixed: dict[str, Any] = {name: bind.effective_value for name, bind in binds.items() if not bind.required}
        found = _COMPILED[key] = (sql, fixed, processors)
    return found


def params_for(fixed: dict[str, Any], params: Mapping[str, Any]) -> Mapping[str, Any]:
    return {**fixed, **params} if fixed else params


def execute(conn: Connection, stmt: Executable, params: Mapping[str, Any]) -> CursorResult[Any]:
    """Run `stmt` with `params`: its compiled-once text on PostgreSQL (psycopg), the statement itself elsewhere
    (SQLite's driver takes positional parameters, and nothing there is hot)."""
    if not is_postgres(conn):
        return conn.execute(stmt, dict(params))
    sql, fixed, processors = _compiled(stmt, conn)
    values = {**fixed, **params}
    for name, process in processors.items():
        if name in values:
            values[name] = process(values[name])
    return conn.exec_driver_sql(sql, values)
