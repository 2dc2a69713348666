"""The SQL adapters on SQLite (the embedded default of `make run`): the same click rules as over the fakes,
and the index sync picking up another replica's changes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from prometheus_client import REGISTRY

from services.ads.adapters.promoted_events import ProtoPromotedEvents
from services.ads.adapters.promoted_index import InMemoryPlacementIndex
from services.ads.adapters.promoted_metrics import PromotedMetrics
from services.ads.adapters.promoted_repository import SqlAlchemyPromotedReader, SqlAlchemyPromotedUnitOfWork
from services.ads.domain.promoted import ChangeCampaignState, ClickOutcome, CreateCampaign, TokenSigner
from services.ads.entrypoints.promoted_workers import IndexSync
from services.ads.service_layer import promoted as uc
from services.kit.db import make_engine
from tests.integration.ads.promoted_support import migrate_promoted
from tests.unit.ads.promoted_fakes import FakeConnects


def test_clicks_budgets_and_the_index_sync_work_on_sqlite(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'ads.db'}", pool_size=2)
    migrate_promoted(engine)
    now = datetime.now(UTC)
    events, metrics, rules = ProtoPromotedEvents(), PromotedMetrics(), uc.Rules(reserve=4)
    connects = FakeConnects({"fl-1": 100})
    signer = TokenSigner(b"k" * 32, window=timedelta(minutes=30))

    def uow() -> SqlAlchemyPromotedUnitOfWork:
        return SqlAlchemyPromotedUnitOfWork(engine)

    replicas = [InMemoryPlacementIndex(reserve=4, pacing=False) for _ in range(2)]
    syncs = [IndexSync(SqlAlchemyPromotedReader(engine), ix, metrics, lambda: now, interval=1.0) for ix in replicas]
    c = uc.create_campaign(uow(), CreateCampaign("req-1", "fl-1", "python", 4, 8), events, rules, now)
    for sync in syncs:
        sync.run_once()
    charger = uc.ClickCharger(uow, connects, replicas[0], signer, events, metrics, rules)
    served = [uc.get_placements(replicas[0], signer, metrics, "python", f"v{i}", 1, now)[0] for i in range(3)]
    before = REGISTRY.get_sample_value("ads_promoted_clicks_total", {"outcome": "CHARGED"}) or 0
    outcomes = [charger.record_click(f"click-{i}", s.token, now).outcome for i, s in enumerate(served)]
    assert outcomes == [ClickOutcome.CHARGED, ClickOutcome.CHARGED, ClickOutcome.BUDGET_EXHAUSTED]
    assert charger.record_click("click-9", served[0].token, now).outcome is ClickOutcome.DUPLICATE
    assert connects.spent_by("fl-1") == 8
    assert REGISTRY.get_sample_value("ads_promoted_clicks_total", {"outcome": "CHARGED"}) == before + 2
    assert uc.get_placements(replicas[0], signer, metrics, "python", "new", 1, now) == []
    syncs[1].run_once()  # the other replica learns of the spend from the database
    assert uc.get_placements(replicas[1], signer, metrics, "python", "new", 1, now) == []
    uc.change_campaign_state(uow(), ChangeCampaignState("req-2", c.campaign_id, True), events, now)
    syncs[1].run_once()
    assert replicas[1].campaign(c.campaign_id).state.value == "PAUSED"  # type: ignore[union-attr]
    engine.dispose()
