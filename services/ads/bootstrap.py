"""The one place where ads is wired: config, database, Kafka, servicer.

Auctions, the badge and promoted profiles are not built yet: AdsService
answers UNIMPLEMENTED (the generated base class) until their issues land;
the service already starts, migrates, relays its outbox and serves health,
reflection and metrics.
"""

from __future__ import annotations

from adsmon.ads.v1 import ads_pb2, ads_pb2_grpc

from services.ads.adapters import topics
from services.ads.adapters.migrations import MIGRATIONS
from services.ads.config import SERVICE, AdsConfig
from services.kit.auth import Policy
from services.kit.bootstrap import outbox_relay, start_foundation
from services.kit.db import Database
from services.kit.main import ServiceSpec
from services.kit.server import App, Component, ServiceRegistration
from services.kit.worker import Worker

SERVICE_NAME = ads_pb2.DESCRIPTOR.services_by_name["AdsService"].full_name
POLICY = Policy.build(SERVICE_NAME, default={"marketplace", "operator", "tests"})


def bootstrap(config: AdsConfig, *, database: Database | None = None, relay: Worker | None = None) -> App:
    """Wire ads; every collaborator defaults to the real one built from `config`."""
    base = config.base
    database = database or start_foundation(base, MIGRATIONS, produces=topics.PRODUCES, consumes=topics.CONSUMES)
    if relay is None and base.relay_in_process:
        relay = outbox_relay(base, database.engine)
    components: list[Component] = [relay] if relay is not None else []
    return App(
        config=base,
        services=[ServiceRegistration(SERVICE_NAME, ads_pb2_grpc.add_AdsServiceServicer_to_server,
                                      ads_pb2_grpc.AdsServiceServicer(), POLICY)],
        components=components,
        on_close=[database.close],
    )


SPEC = ServiceSpec(SERVICE, AdsConfig.from_env, bootstrap, MIGRATIONS)
