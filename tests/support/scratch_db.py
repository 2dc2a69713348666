"""Dropping a scratch database that a test or a benchmark created, whoever is still connected to it.

`DROP DATABASE ... WITH (FORCE)` terminates the other sessions, but PostgreSQL 15 refuses it to a non-superuser
while an autovacuum worker is in the database (InsufficientPrivilege: "must be a member of the role whose
process is being terminated"; the worker belongs to no role): a benchmark that had just loaded a few hundred
thousand rows failed in its clean-up, its results unprinted. A plain DROP DATABASE stops autovacuum workers
itself (but refuses while clients are connected), so the two are tried in turn until one succeeds.
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from psycopg import errors as pg_errors


def drop_database(conn: sa.Connection, name: str, *, timeout: float = 60.0) -> None:
    """DROP DATABASE IF EXISTS `name` on an autocommit connection, retried as above for up to `timeout` s."""
    quoted = '"' + name.replace('"', '""') + '"'
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)")
            return
        except sa.exc.ProgrammingError as exc:
            if not isinstance(exc.orig, pg_errors.InsufficientPrivilege) or time.monotonic() > deadline:
                raise
        try:  # an autovacuum worker: a plain DROP makes it exit (and fails if a client connected meanwhile)
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {quoted}")
            return
        except sa.exc.OperationalError as exc:
            if not isinstance(exc.orig, pg_errors.ObjectInUse) or time.monotonic() > deadline:
                raise
        time.sleep(0.2)
