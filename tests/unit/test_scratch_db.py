"""Dropping scratch databases: the FORCE drop PostgreSQL 15 refuses while autovacuum works in the database."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from psycopg import errors as pg_errors

from tests.support.scratch_db import drop_database


class Conn:
    """Answers each statement with the next scripted outcome (an exception to raise, or None)."""

    def __init__(self, *outcomes: Exception | None) -> None:
        self.outcomes = list(outcomes)
        self.sent: list[str] = []

    def exec_driver_sql(self, sql: str) -> None:
        self.sent.append(sql)
        outcome = self.outcomes.pop(0)
        if outcome is not None:
            raise outcome


def refused() -> sa.exc.ProgrammingError:  # autovacuum's worker in the database
    return sa.exc.ProgrammingError("DROP", {}, pg_errors.InsufficientPrivilege("must be a member of the role"))


def in_use() -> sa.exc.OperationalError:  # a client connected meanwhile
    return sa.exc.OperationalError("DROP", {}, pg_errors.ObjectInUse("is being accessed by other users"))


def test_a_force_drop_is_enough_when_allowed() -> None:
    conn = Conn(None)
    drop_database(conn, "t_x")  # type: ignore[arg-type]
    assert conn.sent == ['DROP DATABASE IF EXISTS "t_x" WITH (FORCE)']


def test_a_refused_force_drop_falls_back_to_a_plain_drop_and_retries_while_clients_come_and_go() -> None:
    conn = Conn(refused(), in_use(), refused(), None)
    drop_database(conn, "t_x")  # type: ignore[arg-type]
    assert conn.sent == ['DROP DATABASE IF EXISTS "t_x" WITH (FORCE)', 'DROP DATABASE IF EXISTS "t_x"'] * 2


def test_other_errors_and_the_deadline_are_not_swallowed() -> None:
    with pytest.raises(sa.exc.ProgrammingError):
        drop_database(Conn(sa.exc.ProgrammingError("DROP", {}, pg_errors.SyntaxError("x"))), "t_x")  # type: ignore[arg-type]
    with pytest.raises(sa.exc.ProgrammingError):
        drop_database(Conn(refused(), in_use(), refused()), "t_x", timeout=-1.0)  # type: ignore[arg-type]
