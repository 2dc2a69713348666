"""A random ledger workload over injected time: every kind of transaction, for the ledger totals tests.

Credits of every source, spends and holds for every reason, increases, partial captures, releases, returns,
and lot and hold expiries (time jumps past the lots' year and the holds' ttl). `apply(cmd, caller, at)` runs
one command against the storage under test and returns its Outcome; the workload only reads outcomes, so
the same seed gives the same sequence of decisions on any storage whose rules are the same.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from services.connects.domain import commands as c
from services.connects.domain.model import AD_REASONS, LotSource, ReturnReason, SpendReason
from services.connects.service_layer.handlers import AnyCommand, Outcome
from tests.conftest import unique

Apply = Callable[[AnyCommand, str, datetime], Outcome]
CREDIT_SOURCES = (LotSource.PURCHASE, LotSource.PLAN_GRANT, LotSource.BONUS)


@dataclass
class Workload:
    """What a run did, for the tests' own bookkeeping."""

    started: datetime
    ended: datetime
    accounts: list[str]
    applied: dict[str, int] = field(default_factory=dict)
    refused: dict[str, int] = field(default_factory=dict)


def _caller(cmd: AnyCommand, reason: SpendReason | None = None) -> str:
    if isinstance(cmd, c.Credit):
        return "billing" if cmd.source is LotSource.PURCHASE else "marketplace"
    if isinstance(cmd, c.ReturnConnects):
        return "marketplace"
    if isinstance(cmd, c.ReverseCredit):
        return "billing"
    if isinstance(cmd, c.ExpireLots | c.ExpireHold):
        return "connects"
    return "ads" if reason in AD_REASONS else "marketplace"


def run_workload(apply: Apply, start: datetime, *, seed: int, steps: int = 240, accounts: int = 4) -> Workload:
    rng = random.Random(seed)
    names = [unique(f"w{i}") for i in range(accounts)]
    done = Workload(start, start, names)
    at = start
    holds: list[tuple[str, SpendReason, int]] = []  # open (as far as we know) holds: id, reason, amount
    returnable: list[str] = []
    purchased: list[str] = []  # PURCHASE credits not yet reversed (a chargeback's ReverseCredit)

    def do(cmd: AnyCommand, reason: SpendReason | None = None) -> Outcome:
        out = apply(cmd, _caller(cmd, reason), at)
        tally = done.refused if out.error is not None else done.applied
        tally[cmd.method] = tally.get(cmd.method, 0) + 1
        return out

    for _ in range(steps):
        # Mostly minutes apart; now and then a jump past holds' ttl or lots' year (expiries happen lazily).
        jump = rng.choices([timedelta(minutes=rng.randint(1, 600)), timedelta(days=rng.randint(5, 40)),
                            timedelta(days=rng.randint(300, 380))], weights=[90, 8, 2])[0]
        at += jump
        acct = rng.choice(names)
        op = rng.choices(["credit", "spend", "hold", "increase", "capture", "release", "return", "expire_lots",
                          "expire_hold", "reverse"], weights=[22, 16, 16, 10, 10, 6, 8, 6, 6, 3])[0]
        reason = rng.choice(list(SpendReason))
        if op == "credit":
            credit = c.Credit(unique("r"), acct, rng.randint(1, 80), rng.choice(CREDIT_SOURCES), f"ref:{rng.random()}")
            out = do(credit)
            if out.receipt and credit.source is LotSource.PURCHASE:
                purchased.append(out.receipt.recorded.transaction_id)
        elif op == "spend":
            out = do(c.Spend(unique("r"), acct, rng.randint(1, 30), reason, f"job:{unique('j')}"), reason)
            if out.receipt and reason in (SpendReason.PROPOSAL, SpendReason.BOOST):
                returnable.append(out.receipt.recorded.transaction_id)
        elif op == "hold":
            amount = rng.randint(1, 30)
            out = do(c.PlaceHold(unique("r"), acct, amount, reason, "job:x",
                                 ttl=timedelta(hours=rng.randint(1, 24 * 20))), reason)
            if out.receipt:
                holds.append((out.receipt.hold_id, reason, amount))
        elif holds and op in ("increase", "capture", "release", "expire_hold"):
            i = rng.randrange(len(holds))
            hold_id, hold_reason, amount = holds[i]
            if op == "increase":
                new_amount = amount + rng.randint(0, 25)
                out = do(c.IncreaseHold(unique("r"), hold_id, new_amount), hold_reason)
                if out.receipt:
                    holds[i] = (hold_id, hold_reason, new_amount)
            elif op == "capture":
                out = do(c.CaptureHold(unique("r"), hold_id, rng.randint(1, amount)), hold_reason)
                if out.receipt and hold_reason is SpendReason.BOOST:
                    returnable.append(out.receipt.recorded.transaction_id)
            elif op == "release":
                do(c.ReleaseHold(unique("r"), hold_id), hold_reason)
            else:
                do(c.ExpireHold(hold_id))
            if op != "increase":
                holds.pop(i)
        elif returnable and op == "return":
            tx_id = returnable.pop(rng.randrange(len(returnable)))
            do(c.ReturnConnects(unique("r"), tx_id, rng.choice([ReturnReason.JOB_CANCELLED_BEFORE_CONTRACT,
                                                                 ReturnReason.JOB_REMOVED_TOS])))
        elif op == "expire_lots":
            do(c.ExpireLots(acct))
        elif purchased and op == "reverse":
            do(c.ReverseCredit(unique("r"), purchased.pop(rng.randrange(len(purchased)))))
    done.ended = at
    return done

