"""Counting SQLAlchemy compilations: a hot statement must be compiled once, not on every call."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.sql import compiler


class Compilations:
    count = 0


def count_compilations(monkeypatch: pytest.MonkeyPatch) -> Compilations:
    """From now on (until the test ends) every SQL compilation adds one to the returned `count`."""
    seen = Compilations()
    real_init = compiler.SQLCompiler.__init__

    def counting(self: compiler.SQLCompiler, *args: Any, **kwargs: Any) -> None:
        seen.count += 1
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(compiler.SQLCompiler, "__init__", counting)
    return seen
