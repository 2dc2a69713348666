"""Billing's service layer over SQLite (a real SQL engine, in a temp file), a fake ledger and the sandbox."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from services.billing.adapters.migrations import MIGRATIONS
from services.billing.adapters.repository import BillingUnitOfWork
from services.billing.adapters.sandbox_provider import SandboxCore, SandboxPaymentProvider
from services.billing.service_layer.context import Context
from services.kit.db import make_engine
from services.kit.migrations import upgrade
from tests.unit.billing.fakes import FakeClock, FakeLedger


@pytest.fixture
def engine(tmp_path):
    eng = make_engine(f"sqlite:///{tmp_path}/billing.db", pool_size=5)
    upgrade(eng, MIGRATIONS)
    yield eng
    eng.dispose()


@pytest.fixture
def ctx(engine) -> Iterator[Context]:
    provider = SandboxPaymentProvider(SandboxCore(capture_delay=0.0, webhook_delay=(0.0, 0.0), seed=1),
                                      timeout_delay=0.0)
    yield Context(uow=lambda: BillingUnitOfWork(engine), provider=provider, ledger=FakeLedger(), clock=FakeClock())
    provider.close()
