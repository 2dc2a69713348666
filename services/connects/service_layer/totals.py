"""The journal's totals for a period: what billing reconciles against (GetLedgerTotals)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from services.connects.domain.model import HOLDS, LotSource, SpendReason, TransactionKind

INT64_MAX = 2**63 - 1


@dataclass(frozen=True)
class Issued:
    """Connects credited from one source, and the CREDIT transactions counted."""

    connects: int
    transactions: int


@dataclass(frozen=True)
class LedgerTotals:
    """Sums over the journal, exact (Python ints: a hostile journal may hold sums past int64).

    `system_balances` has every system account as of `end` (postings of transactions before `end`); the
    others count the transactions of [start, end), only the keys that occurred: `issued` CREDIT by lot
    source, `spent` SPEND and CAPTURE (captured amount) by reason and origin source of the lots consumed,
    `expired` EXPIRE, `returned` RETURN and `reversed` REVERSAL (a chargeback's claw-back) by origin source of
    their lots.
    """

    start: datetime
    end: datetime
    system_balances: dict[str, int]
    issued: dict[LotSource, Issued] = field(default_factory=dict)
    spent: dict[tuple[SpendReason, LotSource], int] = field(default_factory=dict)
    expired: dict[LotSource, int] = field(default_factory=dict)
    returned: dict[LotSource, int] = field(default_factory=dict)
    reversed: dict[LotSource, int] = field(default_factory=dict)

    @property
    def held(self) -> int:
        """Connects reserved by open holds as of `end`: the balance of system:holds."""
        return self.system_balances.get(HOLDS, 0)

    def add_moved(self, kind: TransactionKind, reason: SpendReason | None, origin: LotSource, amount: int) -> None:
        """While building: count `amount` Connects of lots of `origin` moved by a SPEND, CAPTURE (captured part),
        EXPIRE, RETURN or REVERSAL transaction (`reason`: its spend reason)."""
        if kind is TransactionKind.EXPIRE:
            self.expired[origin] = self.expired.get(origin, 0) + amount
        elif kind is TransactionKind.RETURN:
            self.returned[origin] = self.returned.get(origin, 0) + amount
        elif kind is TransactionKind.REVERSAL:
            self.reversed[origin] = self.reversed.get(origin, 0) + amount
        elif kind in (TransactionKind.SPEND, TransactionKind.CAPTURE) and reason is not None:
            self.spent[(reason, origin)] = self.spent.get((reason, origin), 0) + amount

    def out_of_int64(self) -> list[tuple[str, int]]:
        """(what, value) of every figure an int64 cannot carry."""
        figures: list[tuple[str, int]] = [(f"system_balances[{a}]", v) for a, v in self.system_balances.items()]
        figures += [(f"issued[{s.value}]", i.connects) for s, i in self.issued.items()]
        figures += [(f"spent[{r.value},{o.value}]", v) for (r, o), v in self.spent.items()]
        figures += [(f"expired[{o.value}]", v) for o, v in self.expired.items()]
        figures += [(f"returned[{o.value}]", v) for o, v in self.returned.items()]
        figures += [(f"reversed[{o.value}]", v) for o, v in self.reversed.items()]
        return [(what, v) for what, v in figures if not -INT64_MAX - 1 <= v <= INT64_MAX]
