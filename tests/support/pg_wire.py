"""What a PostgreSQL engine's connections send, read from libpq's protocol trace (so raw psycopg pipelines count
as much as SQLAlchemy statements): statements by their first word, and round trips.

A round trip is a wait for the server: each Sync (extended protocol: one per statement outside a pipeline, one
per pipeline flush) and each simple Query. BEGIN, COMMIT and ROLLBACK are counted under their own names.
"""

from __future__ import annotations

import re
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')
_MESSAGE = re.compile(r"^(\d{4}-\d\d-\d\d [\d:.]+\t)?[FB]\t\d+\t")


def _messages(text: str) -> list[str]:
    """The trace's messages, one a line (a statement's own newlines continue its Parse message)."""
    out: list[str] = []
    for line in text.splitlines():
        if out and not _MESSAGE.match(line):
            out[-1] += " " + line
        else:
            out.append(line)
    return out


def _first_word(sql: str) -> str:
    words = sql.split(None, 1)
    return words[0].upper() if words else ""


def count_trace(text: str, named: dict[str, str] | None = None) -> Counter[str]:
    """Statements by first word and "ROUND_TRIPS", from one connection's libpq trace. `named`: the connection's
    prepared statements (name -> text) from before the trace began; Parse messages in the trace add to it."""
    counts: Counter[str] = Counter()
    named = named if named is not None else {}
    pending = ""  # the text of the last unnamed Parse
    for line in _messages(text):
        fields = line.split("\t")
        if fields and fields[0] not in ("F", "B"):
            fields = fields[1:]  # the timestamp
        if len(fields) < 3 or fields[0] != "F":
            continue
        kind, rest = fields[2], "\t".join(fields[3:])
        quoted = _QUOTED.findall(rest)
        if kind == "Parse" and len(quoted) >= 2:
            if quoted[0]:
                named[quoted[0]] = quoted[1]
            else:
                pending = quoted[1]
        elif kind == "Bind" and len(quoted) >= 2:
            counts[_first_word(named.get(quoted[1], "?") if quoted[1] else pending)] += 1
        elif kind == "Query" and quoted:
            counts[_first_word(quoted[0])] += 1
            counts["ROUND_TRIPS"] += 1
        elif kind == "Sync":
            counts["ROUND_TRIPS"] += 1
    return counts


class _Traced:
    """One pooled connection's trace file, how far it was read, and its prepared statements' texts."""

    def __init__(self) -> None:
        self.file = tempfile.TemporaryFile()  # noqa: SIM115 (closed by WireCounter.close)
        self.read = 0
        self.named: dict[str, str] = {}


class WireCounter:
    """Traces every connection `engine` hands out; `take()` returns the counts since the last take (of the
    connections checked in since)."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self._traced: dict[int, _Traced] = {}
        sa.event.listen(engine, "checkout", self._trace)
        sa.event.listen(engine, "checkin", self._untrace)

    def _trace(self, dbapi_conn: Any, *args: Any) -> None:
        traced = self._traced.setdefault(id(dbapi_conn), _Traced())
        # statements psycopg prepared before this checkout: their Parse is not in the trace
        for (query, _types), name in dbapi_conn._prepared._names.items():
            traced.named[name.decode()] = query.decode(errors="replace")
        dbapi_conn.pgconn.trace(traced.file.fileno())

    def _untrace(self, dbapi_conn: Any, *args: Any) -> None:
        if dbapi_conn is not None:
            dbapi_conn.pgconn.untrace()  # flushes the trace

    def take(self) -> Counter[str]:
        counts: Counter[str] = Counter()
        for traced in self._traced.values():
            traced.file.seek(traced.read)
            data = traced.file.read()
            traced.read += len(data)
            counts.update(count_trace(data.decode(errors="replace"), traced.named))
        return counts

    def close(self) -> None:
        sa.event.remove(self.engine, "checkout", self._trace)
        sa.event.remove(self.engine, "checkin", self._untrace)
        for traced in self._traced.values():
            traced.file.close()


@contextmanager
def wire(engine: sa.Engine) -> Iterator[Counter[str]]:
    """Counts of what `engine`'s connections send inside the block (filled in when it ends)."""
    counter = WireCounter(engine)
    counts: Counter[str] = Counter()
    try:
        yield counts
    finally:
        counts.update(counter.take())
        counter.close()
