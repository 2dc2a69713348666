"""The one place where ads is wired: config, database, Kafka, the connects client, servicer, workers.

What runs (each a kit.worker.Worker, started after the server listens and stopped after it drained):
the outbox relay (unless ADSMON_ADS_RELAY_IN_PROCESS=false), the settlement worker (captures and
releases of closed auctions), the auction closer (7 days up, bids left waiting for the ledger), the
badge meter (pricing tick, due charges; demand from `ads_search_counts`), the search-count flusher
(GetPlacements' searches per category, added to the database every few seconds), the gauges, and the
marketplace.jobs.v1 consumer (unless ADSMON_ADS_CONSUME_JOBS=false), and promoted profiles' index sync
and pending-click resumer (`build_promoted`). Boost auctions and the availability badge are served by
`AdsServicer`, which delegates the promoted-profile RPCs to the `PromotedServicer` built here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from adsmon.ads.v1 import ads_pb2_grpc

from services.ads.adapters import metrics as prom
from services.ads.adapters import topics
from services.ads.adapters.migrations import MIGRATIONS
from services.ads.adapters.repository import SqlAlchemyAdsUnitOfWork
from services.ads.adapters.searches import SearchFlusher, SearchTally
from services.ads.config import SERVICE, AdsConfig
from services.ads.entrypoints import jobs_consumer
from services.ads.entrypoints.grpc_servicer import POLICY, SERVICE_NAME, AdsServicer
from services.ads.entrypoints.promoted_servicer import build_promoted
from services.ads.entrypoints.scheduler import AuctionCloser, BadgeMeter, GaugeRefresher, Settler
from services.ads.promoted_config import derived_token_key
from services.ads.service_layer.auctions import AuctionSettings
from services.ads.service_layer.badges import BadgeSettings
from services.ads.service_layer.metrics import Metrics
from services.ads.service_layer.unit_of_work import SearchCounter, StoredSearches
from services.connects.client import AbstractConnectsClient, GrpcConnectsClient
from services.kit.bootstrap import consumer, outbox_relay, start_foundation
from services.kit.db import Database
from services.kit.main import ServiceSpec
from services.kit.server import App, Component, ServiceRegistration
from services.kit.worker import Worker

__all__ = ["POLICY", "SERVICE_NAME", "SPEC", "bootstrap"]


def utc_now() -> datetime:
    return datetime.now(UTC)


def bootstrap(config: AdsConfig, *, database: Database | None = None, relay: Worker | None = None,
              clock: Callable[[], datetime] = utc_now, connects: AbstractConnectsClient | None = None,
              searches: SearchCounter | None = None, metrics: Metrics | None = None) -> App:
    """Wire ads; every collaborator defaults to the real one built from `config`."""
    base = config.base
    database = database or start_foundation(base, MIGRATIONS, produces=topics.PRODUCES, consumes=topics.CONSUMES)
    engine = database.engine
    if relay is None and base.relay_in_process:
        relay = outbox_relay(base, engine)
    wake_relay = relay.wake if relay is not None else None
    client = connects or GrpcConnectsClient(config.connects_target, secret=base.auth_secret, caller=SERVICE,
                                            tls=base.tls)
    tally = SearchTally()  # GetPlacements counts here; the flusher adds it to ads_search_counts
    searches = searches or StoredSearches()
    metrics = metrics or prom.PrometheusMetrics()
    prom.placebo_share.set(config.placebo_share)

    def uow_factory() -> SqlAlchemyAdsUnitOfWork:
        return SqlAlchemyAdsUnitOfWork(engine, after_commit=wake_relay)

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
    components: list[Component] = [relay] if relay is not None else []
    components += [settler, closer, meter, GaugeRefresher(uow_factory, clock)]
    if config.consume_jobs:
        def after_event() -> None:
            settler.wake()
            if wake_relay is not None:
                wake_relay()

        components.append(consumer(base, engine, jobs_consumer.GROUP_ID, list(topics.CONSUMES),
                                   jobs_consumer.make_handler(clock, auction_settings, metrics),
                                   after_commit=after_event))
    # PlaceBid and StartBadge wait on the ledger, not on the database: their own, larger thread pool.
    handlers = ThreadPoolExecutor(max_workers=config.handler_threads, thread_name_prefix="ads-handler")

    async def run(fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(handlers, fn, *args)

    promoted_settings = config.promoted
    if not promoted_settings.token_key:
        promoted_settings = replace(promoted_settings, token_key=derived_token_key(base.auth_secret))
    promoted_executor = ThreadPoolExecutor(max_workers=config.promoted_threads, thread_name_prefix="promoted")
    promoted, promoted_components = build_promoted(promoted_settings, engine, connects=client, clock=clock,
                                                   after_commit=wake_relay, executor=promoted_executor,
                                                   searches=tally)
    components += [*promoted_components, SearchFlusher(engine, tally, interval=config.search_flush_interval_seconds)]
    servicer = AdsServicer(uow_factory, client, clock, run, auction_settings=auction_settings,
                           badge_settings=badge_settings, searches=searches, metrics=metrics, promoted=promoted,
                           on_closed=settler.wake)
    close_client = getattr(client, "close", None)
    return App(
        config=base,
        services=[ServiceRegistration(SERVICE_NAME, ads_pb2_grpc.add_AdsServiceServicer_to_server, servicer,
                                      POLICY)],
        components=components,
        on_close=[handlers.shutdown, promoted_executor.shutdown, database.close,
                  *([close_client] if close_client else [])],
    )


SPEC = ServiceSpec(SERVICE, AdsConfig.from_env, bootstrap, MIGRATIONS)
