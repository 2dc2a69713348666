"""The one place where ads is wired: config, database, Kafka, the connects client, servicer, workers.

Boost auctions and the availability badge are served by `AdsServicer`; the promoted-profile RPCs answer
UNIMPLEMENTED (the generated base) until the promoted servicer is wired in here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from adsmon.ads.v1 import ads_pb2_grpc

from services.ads.adapters import metrics as prom
from services.ads.adapters.repository import SqlAlchemyAdsUnitOfWork
from services.ads.adapters.tables import MIGRATIONS
from services.ads.config import AdsConfig
from services.ads.entrypoints import jobs_consumer
from services.ads.entrypoints.grpc_servicer import POLICY, SERVICE_NAME, AdsServicer
from services.ads.entrypoints.scheduler import AuctionCloser, BadgeMeter, GaugeRefresher, Settler
from services.ads.service_layer.auctions import AuctionSettings
from services.ads.service_layer.badges import BadgeSettings
from services.ads.service_layer.metrics import Metrics
from services.ads.service_layer.unit_of_work import NoSearches, SearchCounter
from services.connects.client import AbstractConnectsClient, GrpcConnectsClient
from services.kit.bootstrap import consumer, start_foundation
from services.kit.kafka import MARKETPLACE_JOBS_TOPIC
from services.kit.server import App, ServiceRegistration

__all__ = ["MIGRATIONS", "POLICY", "SERVICE_NAME", "build_app"]


def utc_now() -> datetime:
    return datetime.now(UTC)


async def build_app(config: AdsConfig, *, clock: Callable[[], datetime] = utc_now,
                    connects: AbstractConnectsClient | None = None, searches: SearchCounter | None = None,
                    metrics: Metrics | None = None) -> App:
    """Open and migrate the database, check Kafka, and assemble the server and its background workers."""
    base = config.base
    db, relay = start_foundation(base, MIGRATIONS)
    engine = db.engine
    client = connects or GrpcConnectsClient(config.connects_target, secret=base.auth_secret, caller="ads")
    searches = searches or NoSearches()
    metrics = metrics or prom.PrometheusMetrics()
    prom.placebo_share.set(config.placebo_share)

    def uow_factory() -> SqlAlchemyAdsUnitOfWork:
        return SqlAlchemyAdsUnitOfWork(engine, after_commit=relay.notify)

    auction_settings = AuctionSettings(length=config.auction_length, hold_ttl=config.hold_ttl,
                                       placebo_share=config.placebo_share, pending_grace=config.pending_bid_grace)
    badge_settings = BadgeSettings(pricing=config.badge_pricing)
    settler = Settler(uow_factory, client, clock, metrics, interval=config.settlement_interval_seconds,
                      concurrency=config.settlement_concurrency)
    closer = AuctionCloser(uow_factory, client, clock, auction_settings, metrics,
                           interval=config.closer_interval_seconds, on_closed=settler.wake)
    meter = BadgeMeter(uow_factory, client, clock, badge_settings, searches, metrics,
                       interval=config.badge_meter_interval_seconds,
                       pricing_interval=config.badge_pricing_interval_seconds)
    components: list[Any] = [relay, settler, closer, meter, GaugeRefresher(uow_factory, clock)]
    if config.consume_jobs:
        components.append(consumer(base, engine, jobs_consumer.GROUP_ID, [MARKETPLACE_JOBS_TOPIC],
                                   jobs_consumer.make_handler(clock, auction_settings, metrics, settler.wake)))
    handlers = ThreadPoolExecutor(max_workers=config.handler_threads, thread_name_prefix="ads-handler")

    async def run(fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(handlers, fn, *args)

    servicer = AdsServicer(uow_factory, client, clock, run, auction_settings=auction_settings,
                           badge_settings=badge_settings, searches=searches, metrics=metrics,
                           on_closed=settler.wake)
    close_client = getattr(client, "close", None)
    return App(
        config=base,
        services=[ServiceRegistration(SERVICE_NAME, ads_pb2_grpc.add_AdsServiceServicer_to_server, servicer,
                                      POLICY)],
        components=components,
        on_close=[handlers.shutdown, db.close, *([close_client] if close_client else [])],
    )
