"""The business maximum of one command's amount (ADSMON_CONNECTS_MAX_AMOUNT), refused before queuing."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from services.connects.bootstrap import ConnectsApp
from services.connects.config import ConnectsConfig
from services.connects.domain import commands as c
from services.connects.domain.model import MAX_CONNECTS, LotSource, SpendReason
from services.connects.service_layer import handlers
from services.kit.config import ConfigError
from services.kit.errors import DomainError, InvalidArgument
from services.kit.server import running
from tests.conftest import unique
from tests.support.connects import connects_app
from tests.unit.connects.fakes import FakeLedgerStore

NOW = datetime(2026, 3, 1, tzinfo=UTC)


def app_over(store: FakeLedgerStore, max_amount: int = c.DEFAULT_MAX_AMOUNT,
             metrics: handlers.Metrics | None = None) -> ConnectsApp:
    return connects_app(store.uow, store, clock=lambda: NOW, metrics=metrics, MAX_AMOUNT=str(max_amount))


class Refusals(handlers.NullMetrics):
    def __init__(self) -> None:
        self.reasons: list[str] = []

    def refused(self, method: str, error: DomainError) -> None:
        self.reasons.append(error.reason)


TOO_LARGE = [
    lambda n: c.Credit(unique("r"), "a", n, LotSource.BONUS),
    lambda n: c.Spend(unique("r"), "a", n, SpendReason.PROPOSAL),
    lambda n: c.PlaceHold(unique("r"), "a", n, SpendReason.PROPOSAL),
    lambda n: c.IncreaseHold(unique("r"), "h", n),
    lambda n: c.CaptureHold(unique("r"), "h", n),
]


@pytest.mark.parametrize("build", TOO_LARGE, ids=["Credit", "Spend", "Hold", "IncreaseHold", "CaptureHold"])
@pytest.mark.parametrize("amount", [c.DEFAULT_MAX_AMOUNT + 1, MAX_CONNECTS])
async def test_an_amount_above_the_maximum_is_refused_before_it_is_queued(build, amount):
    store, refusals = FakeLedgerStore(), Refusals()
    app = app_over(store, metrics=refusals)  # its batcher is not started: anything queued would never be answered
    cmd = build(amount)
    with pytest.raises(InvalidArgument) as exc:
        await asyncio.wait_for(app.ledger.mutate(cmd, "billing"), timeout=2)
    assert refusals.reasons == ["AMOUNT_TOO_LARGE"], "counted like any other refusal"
    field = cmd.amount_fields[0]
    assert (exc.value.code, exc.value.reason) == ("INVALID_ARGUMENT", "AMOUNT_TOO_LARGE")
    assert exc.value.metadata == {"field": field, "maximum": str(c.DEFAULT_MAX_AMOUNT)}
    assert not store.transactions_by_id and not store.requests


async def test_the_maximum_itself_is_accepted_and_the_setting_moves_the_bound():
    store, acct = FakeLedgerStore(), unique("a")
    async with running(app_over(store, max_amount=50)) as app:
        ledger = app.ledger
        await ledger.mutate(c.Credit(unique("r"), acct, 50, LotSource.BONUS), "operator")
        held = await ledger.mutate(c.PlaceHold(unique("r"), acct, 20, SpendReason.PROPOSAL), "operator")
        await ledger.mutate(c.IncreaseHold(unique("r"), held.hold_id, 50), "operator")
        with pytest.raises(InvalidArgument, match="at most 50"):
            await ledger.mutate(c.IncreaseHold(unique("r"), held.hold_id, 51), "operator")
        with pytest.raises(InvalidArgument, match="at most 50"):
            await ledger.mutate(c.Credit(unique("r"), acct, 51, LotSource.BONUS), "operator")
    assert (store.wallets[acct].available, store.wallets[acct].held) == (0, 50)


def test_the_maximum_is_a_setting_with_a_default_of_a_million():
    env = {"ADSMON_TRANSPORT": "plaintext", "ADSMON_AUTH_SECRET": "s" * 32}
    assert ConnectsConfig.from_env(env).max_amount == 1_000_000
    assert ConnectsConfig.from_env({**env, "ADSMON_CONNECTS_MAX_AMOUNT": "5000"}).max_amount == 5000
    for bad in ("0", str(2**63), "lots"):
        with pytest.raises(ConfigError, match="ADSMON_CONNECTS_MAX_AMOUNT"):
            ConnectsConfig.from_env({**env, "ADSMON_CONNECTS_MAX_AMOUNT": bad})
