"""Group commit (the batcher over the fakes): a failed batch is retried and every caller gets an answer."""

from __future__ import annotations

import asyncio

from services.connects.domain import commands as c
from services.connects.domain.model import HoldStatus, SpendReason
from services.kit.server import running
from tests.conftest import unique
from tests.support.connects import connects_app
from tests.unit.connects.conftest import NOW, FlakyUnitOfWorks, credit
from tests.unit.connects.fakes import FakeLedgerStore


def test_a_crash_after_save_before_commit_in_a_batch_is_retried_and_every_caller_gets_a_valid_answer():
    store, acct = FakeLedgerStore(), unique("a")
    uow_factory = FlakyUnitOfWorks(store)

    async def scenario():
        async with running(connects_app(uow_factory, store, clock=lambda: NOW, BATCH_MAX="64")) as app:
            await app.ledger.mutate(credit(acct, 20), "operator")
            return await asyncio.gather(*(app.ledger.execute(c.PlaceHold(unique("r"), acct, 3,
                                                                         SpendReason.PROPOSAL), "operator")
                                          for _ in range(8)))

    outs = asyncio.run(scenario())
    assert sorted(o.error.reason if o.error else "OK" for o in outs) == ["INSUFFICIENT_CONNECTS"] * 2 + ["OK"] * 6
    w = store.wallets[acct]
    hold_ids = {o.receipt.hold_id for o in outs if o.receipt}
    assert hold_ids == {h for h, hold in w.holds.items() if hold.status is HoldStatus.OPEN}
    assert (w.available, w.held) == (2, 18)
    assert uow_factory.calls > 2, "the failed batch was retried"
