"""Promoted profiles served in-process for tests: ads as `services.ads.bootstrap` builds it (AdsServicer
delegating to PromotedServicer, the kit's interceptors), over a test's engine, without Kafka.
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
from adsmon.ads.v1 import ads_pb2_grpc
from sqlalchemy.engine import Engine

from services.ads.adapters.migrations import MIGRATIONS
from services.ads.bootstrap import bootstrap, utc_now
from services.ads.config import AdsConfig
from services.ads.entrypoints.grpc_servicer import AdsServicer
from services.ads.promoted_config import PromotedSettings
from services.connects.client import AbstractConnectsClient
from services.kit import migrations
from services.kit.auth import mint_token
from services.kit.config import ServiceConfig
from services.kit.db import Database, make_engine
from services.kit.server import Server


class SharedDatabase(Database):
    """The test's engine, shared by the replicas of a test and disposed by its fixture, not by a replica."""

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=False)


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
                         db_pool_size=40, relay_in_process=False)  # the tests read the outbox itself


TEST_SETTINGS = PromotedSettings(token_key=b"t" * 32, pacing=False, sync_interval_seconds=0.2)


@dataclass
class Replica:
    """One in-process ads replica: its servicer, its server and a stub authenticated as `tests`."""

    servicer: AdsServicer
    server: Server
    channel: grpc.aio.Channel
    stub: ads_pb2_grpc.AdsServiceStub
    metadata: tuple[tuple[str, str], ...]


@asynccontextmanager
async def promoted_replica(engine: Engine, secret: bytes, connects: AbstractConnectsClient, *,
                           settings: PromotedSettings = TEST_SETTINGS, clock: Callable[[], datetime] = utc_now,
                           start_components: bool = True, port: int = 0) -> AsyncIterator[Replica]:
    config = AdsConfig(base=base_config(secret, port), connects_target="unused", consume_jobs=False,
                       promoted=settings, promoted_threads=32)
    app = bootstrap(config, database=SharedDatabase(engine), clock=clock, connects=connects)
    if not start_components:
        app.components = []
    app.drain_delay_seconds = 0.0
    servicer = app.services[0].servicer
    assert isinstance(servicer, AdsServicer)
    server = Server(app)
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}")
    md = (("authorization", f"Bearer {mint_token(secret, 'marketplace')}"),)
    try:
        yield Replica(servicer, server, channel, ads_pb2_grpc.AdsServiceStub(channel), md)
    finally:
        await channel.close()
        await server.stop()


def settings(**changes: Any) -> PromotedSettings:
    return replace(TEST_SETTINGS, **changes)
