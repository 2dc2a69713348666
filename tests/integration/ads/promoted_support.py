"""Promoted profiles served in-process for tests: a grpc.aio server with the kit's interceptors and an
AdsService that delegates the promoted RPCs to `PromotedServicer` (the lead's AdsServicer does the same).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import grpc
import pytest
import sqlalchemy as sa
from adsmon.ads.v1 import ads_pb2, ads_pb2_grpc
from sqlalchemy.engine import Engine

from services.ads.adapters.migrations import MIGRATIONS
from services.ads.entrypoints.promoted_servicer import PromotedServicer, build_promoted, utc_now
from services.ads.promoted_config import PromotedSettings
from services.connects.client import AbstractConnectsClient
from services.kit import migrations
from services.kit.auth import Policy, mint_token
from services.kit.config import ServiceConfig
from services.kit.db import make_engine
from services.kit.server import App, Server, ServiceRegistration

SERVICE_NAME = ads_pb2.DESCRIPTOR.services_by_name["AdsService"].full_name
POLICY = Policy.build(SERVICE_NAME, default={"marketplace", "operator", "tests"})


class PromotedAdsServicer(ads_pb2_grpc.AdsServiceServicer):
    """AdsService with the promoted-profile RPCs delegated; the rest stay the generated UNIMPLEMENTED."""

    def __init__(self, promoted: PromotedServicer) -> None:
        self.promoted = promoted

    async def CreateCampaign(self, request: Any, context: Any) -> Any:
        return await self.promoted.CreateCampaign(request, context)

    async def GetCampaign(self, request: Any, context: Any) -> Any:
        return await self.promoted.GetCampaign(request, context)

    async def ListCampaigns(self, request: Any, context: Any) -> Any:
        return await self.promoted.ListCampaigns(request, context)

    async def PauseCampaign(self, request: Any, context: Any) -> Any:
        return await self.promoted.PauseCampaign(request, context)

    async def ResumeCampaign(self, request: Any, context: Any) -> Any:
        return await self.promoted.ResumeCampaign(request, context)

    async def GetPlacements(self, request: Any, context: Any) -> Any:
        return await self.promoted.GetPlacements(request, context)

    async def RecordClick(self, request: Any, context: Any) -> Any:
        return await self.promoted.RecordClick(request, context)


def migrate_promoted(engine: Engine) -> None:
    """ads' schema (Alembic, services/ads/adapters/migrations): the outbox and promoted profiles' tables."""
    migrations.upgrade(engine, MIGRATIONS)


def promoted_engine_fixture() -> Any:
    """A fixture for a test module (`engine = promoted_engine_fixture()`): a fresh PostgreSQL database with
    the outbox and promoted profiles' tables."""

    @pytest.fixture
    def engine(create_database: Callable[[str], str]) -> Iterator[sa.Engine]:
        eng = make_engine(create_database("ads"), pool_size=40)
        migrate_promoted(eng)
        yield eng
        eng.dispose()

    return engine


def base_config(secret: bytes, port: int = 0) -> ServiceConfig:
    return ServiceConfig(service="ads", grpc_host="127.0.0.1", grpc_port=port, metrics_host="127.0.0.1",
                         metrics_port=0, database_url="postgresql+psycopg://unused", kafka_bootstrap="127.0.0.1:1",
                         auth_secret=secret, log_level="INFO", log_json=True, shutdown_grace_seconds=1.0,
                         db_pool_size=40)


TEST_SETTINGS = PromotedSettings(token_key=b"t" * 32, pacing=False, sync_interval_seconds=0.2)


@dataclass
class Replica:
    """One in-process ads replica: its servicer, its components and a stub authenticated as `tests`."""

    servicer: PromotedServicer
    server: Server
    channel: grpc.aio.Channel
    stub: ads_pb2_grpc.AdsServiceStub
    metadata: tuple[tuple[str, str], ...]


@asynccontextmanager
async def promoted_replica(engine: Engine, secret: bytes, connects: AbstractConnectsClient, *,
                           settings: PromotedSettings = TEST_SETTINGS, clock: Callable[[], datetime] = utc_now,
                           start_components: bool = True, port: int = 0) -> AsyncIterator[Replica]:
    servicer, components = build_promoted(settings, engine, connects=connects, clock=clock, workers=32)
    registration = ServiceRegistration(SERVICE_NAME, ads_pb2_grpc.add_AdsServiceServicer_to_server,
                                       PromotedAdsServicer(servicer), POLICY)
    app = App(base_config(secret, port), [registration],
              components=list(components) if start_components else [], drain_delay_seconds=0.0)
    server = Server(app)
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}")
    md = (("authorization", f"Bearer {mint_token(secret, 'tests')}"),)
    try:
        yield Replica(servicer, server, channel, ads_pb2_grpc.AdsServiceStub(channel), md)
    finally:
        await channel.close()
        await server.stop()
        servicer.executor.shutdown(wait=False)


def settings(**changes: Any) -> PromotedSettings:
    return replace(TEST_SETTINGS, **changes)
