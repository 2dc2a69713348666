"""Promoted profiles' RPCs (thin: proto -> command -> use case -> proto) and their wiring.

`PromotedServicer` has the generated AdsServiceServicer signatures for CreateCampaign, GetCampaign,
ListCampaigns, PauseCampaign, ResumeCampaign, GetPlacements and RecordClick; AdsServicer delegates them.
GetPlacements runs on the event loop (memory only); the others run on a thread pool (database, ledger).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from adsmon.ads.v1 import ads_pb2
from sqlalchemy.engine import Engine

from services.ads.adapters.promoted_events import ProtoPromotedEvents, campaign_pb, click_outcome_pb
from services.ads.adapters.promoted_index import InMemoryPlacementIndex
from services.ads.adapters.promoted_metrics import PromotedMetrics
from services.ads.adapters.promoted_repository import SqlAlchemyPromotedReader, SqlAlchemyPromotedUnitOfWork
from services.ads.domain.promoted import ChangeCampaignState, CreateCampaign, InvalidPageToken, TokenSigner
from services.ads.entrypoints.promoted_workers import IndexSync, PendingClickResumer
from services.ads.promoted_config import PromotedSettings
from services.ads.service_layer import promoted as uc
from services.ads.service_layer.unit_of_work import SearchRecorder
from services.connects.client import AbstractConnectsClient
from services.kit.server import Component

T = TypeVar("T")


def _encode_cursor(freelancer_id: str, cursor: tuple[datetime, str] | None) -> str:
    if cursor is None:
        return ""
    raw = json.dumps([freelancer_id, cursor[0].isoformat(), cursor[1]]).encode()
    return base64.urlsafe_b64encode(raw).decode()


def _decode_cursor(freelancer_id: str, token: str) -> tuple[datetime, str] | None:
    if not token:
        return None
    try:
        owner, created, campaign_id = json.loads(base64.urlsafe_b64decode(token.encode()))
        cursor = (datetime.fromisoformat(created), str(campaign_id))
    except (ValueError, TypeError, binascii.Error):
        raise InvalidPageToken() from None
    if owner != freelancer_id:
        raise InvalidPageToken()
    return cursor


class PromotedServicer:
    def __init__(self, *, uow_factory: Callable[[], uc.PromotedUnitOfWork], index: uc.PlacementIndex,
                 charger: uc.ClickCharger, signer: TokenSigner, events: uc.PromotedEvents,
                 metrics: uc.PromotedMetricsPort, rules: uc.Rules, clock: Callable[[], datetime],
                 executor: ThreadPoolExecutor, searches: SearchRecorder | None = None) -> None:
        self.uow_factory = uow_factory
        self.searches = searches
        self.index = index
        self.charger = charger
        self.signer = signer
        self.events = events
        self.metrics = metrics
        self.rules = rules
        self.clock = clock
        self.executor = executor

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def CreateCampaign(self, request: ads_pb2.CreateCampaignRequest, context: Any
                             ) -> ads_pb2.CreateCampaignResponse:
        cmd = CreateCampaign(request.request_id, request.freelancer_id, request.category, request.max_cpc_connects,
                             request.daily_budget_connects, request.frequency_cap)
        c = await self._run(uc.create_campaign, self.uow_factory(), cmd, self.events, self.rules, self.clock())
        self.index.apply([c], [])
        return ads_pb2.CreateCampaignResponse(campaign=campaign_pb(c, 0))

    async def GetCampaign(self, request: ads_pb2.GetCampaignRequest, context: Any) -> ads_pb2.GetCampaignResponse:
        c, spent = await self._run(uc.get_campaign, self.uow_factory(), request.campaign_id, self.clock())
        return ads_pb2.GetCampaignResponse(campaign=campaign_pb(c, spent))

    async def ListCampaigns(self, request: ads_pb2.ListCampaignsRequest, context: Any
                            ) -> ads_pb2.ListCampaignsResponse:
        before = _decode_cursor(request.freelancer_id, request.page_token)
        page, cursor = await self._run(uc.list_campaigns, self.uow_factory(), request.freelancer_id,
                                       request.page_size, before, self.clock())
        return ads_pb2.ListCampaignsResponse(campaigns=[campaign_pb(c, spent) for c, spent in page],
                                             next_page_token=_encode_cursor(request.freelancer_id, cursor))

    async def _change(self, request_id: str, campaign_id: str, pause: bool) -> ads_pb2.Campaign:
        cmd = ChangeCampaignState(request_id, campaign_id, pause)
        c = await self._run(uc.change_campaign_state, self.uow_factory(), cmd, self.events, self.clock())
        self.index.apply([c], [])
        _, spent = await self._run(uc.get_campaign, self.uow_factory(), c.campaign_id, self.clock())
        return campaign_pb(c, spent)

    async def PauseCampaign(self, request: ads_pb2.PauseCampaignRequest, context: Any
                            ) -> ads_pb2.PauseCampaignResponse:
        return ads_pb2.PauseCampaignResponse(campaign=await self._change(request.request_id, request.campaign_id,
                                                                         True))

    async def ResumeCampaign(self, request: ads_pb2.ResumeCampaignRequest, context: Any
                             ) -> ads_pb2.ResumeCampaignResponse:
        return ads_pb2.ResumeCampaignResponse(campaign=await self._change(request.request_id, request.campaign_id,
                                                                          False))

    async def GetPlacements(self, request: ads_pb2.GetPlacementsRequest, context: Any
                            ) -> ads_pb2.GetPlacementsResponse:
        served = uc.get_placements(self.index, self.signer, self.metrics, request.category, request.viewer_id,
                                   request.slots, self.clock(), self.searches)
        return ads_pb2.GetPlacementsResponse(placements=[ads_pb2.Placement(
            placement_token=s.token, campaign_id=s.winner.campaign.campaign_id,
            freelancer_id=s.winner.campaign.freelancer_id, position=s.winner.position,
            price_connects=s.winner.price) for s in served])

    async def RecordClick(self, request: ads_pb2.RecordClickRequest, context: Any) -> ads_pb2.RecordClickResponse:
        r = await self._run(self.charger.record_click, request.request_id, request.placement_token, self.clock())
        return ads_pb2.RecordClickResponse(outcome=click_outcome_pb(r.outcome), campaign_id=r.campaign_id,
                                           charged_connects=r.charged)


def utc_now() -> datetime:
    return datetime.now(UTC)


def build_promoted(settings: PromotedSettings, engine: Engine, *, connects: AbstractConnectsClient,
                   clock: Callable[[], datetime] = utc_now, after_commit: Callable[[], Any] | None = None,
                   executor: ThreadPoolExecutor | None = None, workers: int = 8,
                   searches: SearchRecorder | None = None) -> tuple[PromotedServicer, list[Component]]:
    """Wire promoted profiles over `engine` (migrated by ads' Alembic MIGRATIONS: outbox and promoted tables):
    the index is loaded before this returns; the components (index sync, pending-click resumer) are for the
    App to start and stop. `after_commit` is the outbox relay's wake; `searches` counts each GetPlacements
    (the badge price's demand)."""
    metrics = PromotedMetrics()
    events = ProtoPromotedEvents()
    rules = uc.Rules(reserve=settings.reserve_connects, default_quality_bps=settings.default_quality_bps,
                     click_dedup=settings.click_dedup, default_frequency_cap=settings.frequency_cap)
    index = InMemoryPlacementIndex(reserve=settings.reserve_connects, pacing=settings.pacing,
                                   pacing_headroom_seconds=settings.pacing_headroom_seconds)
    signer = TokenSigner(settings.token_key, window=settings.click_window)

    def uow_factory() -> uc.PromotedUnitOfWork:
        return SqlAlchemyPromotedUnitOfWork(engine, after_commit=after_commit)

    charger = uc.ClickCharger(uow_factory, connects, index, signer, events, metrics, rules)
    sync = IndexSync(SqlAlchemyPromotedReader(engine), index, metrics, clock,
                     interval=settings.sync_interval_seconds)
    sync.run_and_record()  # the full load: serving starts from the database's state
    resumer = PendingClickResumer(charger, clock,
                                  older_than=timedelta(seconds=settings.pending_click_after_seconds))
    servicer = PromotedServicer(uow_factory=uow_factory, index=index, charger=charger, signer=signer, events=events,
                                metrics=metrics, rules=rules, clock=clock,
                                executor=executor or ThreadPoolExecutor(workers, thread_name_prefix="promoted"),
                                searches=searches)
    return servicer, [sync, resumer]
