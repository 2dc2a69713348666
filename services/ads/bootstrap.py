"""The one place where ads is wired: config, database, Kafka, servicer.

Auctions, the badge and promoted profiles are not built yet: AdsService
answers UNIMPLEMENTED (the generated base class) until their issues land;
the service already starts, migrates, relays its outbox and serves health,
reflection and metrics.
"""

from __future__ import annotations

from adsmon.ads.v1 import ads_pb2, ads_pb2_grpc

from services.ads.config import AdsConfig
from services.kit import outbox
from services.kit.auth import Policy
from services.kit.bootstrap import start_foundation
from services.kit.server import App, ServiceRegistration

SERVICE_NAME = ads_pb2.DESCRIPTOR.services_by_name["AdsService"].full_name
POLICY = Policy.build(SERVICE_NAME, default={"marketplace", "operator", "tests"})
MIGRATIONS = [outbox.outbox_migration(1)]


async def build_app(config: AdsConfig) -> App:
    base = config.base
    db, relay = start_foundation(base, MIGRATIONS)
    return App(
        config=base,
        services=[ServiceRegistration(SERVICE_NAME, ads_pb2_grpc.add_AdsServiceServicer_to_server,
                                      ads_pb2_grpc.AdsServiceServicer(), POLICY)],
        components=[relay],
        on_close=[db.close],
    )
