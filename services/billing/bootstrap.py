"""The one place where billing is wired: config, database, Kafka, servicer, consumers."""

from __future__ import annotations

from adsmon.billing.v1 import billing_pb2, billing_pb2_grpc

from services.billing.adapters import topics
from services.billing.adapters.migrations import MIGRATIONS
from services.billing.config import SERVICE, BillingConfig
from services.billing.entrypoints.grpc_servicer import BillingServicer
from services.billing.entrypoints.ledger_consumer import handle_ledger_event
from services.kit.auth import Policy
from services.kit.bootstrap import consumer, outbox_relay, start_foundation
from services.kit.db import Database
from services.kit.main import ServiceSpec
from services.kit.server import App, Component, ServiceRegistration
from services.kit.worker import Worker

SERVICE_NAME = billing_pb2.DESCRIPTOR.services_by_name["BillingService"].full_name
POLICY = Policy.build(SERVICE_NAME, default={"marketplace", "operator", "tests"})


def bootstrap(config: BillingConfig, *, database: Database | None = None, relay: Worker | None = None) -> App:
    """Wire billing; every collaborator defaults to the real one built from `config`."""
    base = config.base
    database = database or start_foundation(base, MIGRATIONS, produces=topics.PRODUCES, consumes=topics.CONSUMES)
    if relay is None and base.relay_in_process:
        relay = outbox_relay(base, database.engine)
    wake = relay.wake if relay is not None else None
    components: list[Component] = [relay] if relay is not None else []
    components.append(consumer(base, database.engine, "billing-ledger", [topics.CONNECTS_LEDGER],
                               handle_ledger_event, after_commit=wake))
    return App(
        config=base,
        services=[ServiceRegistration(SERVICE_NAME, billing_pb2_grpc.add_BillingServiceServicer_to_server,
                                      BillingServicer(), POLICY)],
        components=components,
        on_close=[database.close],
    )


SPEC = ServiceSpec(SERVICE, BillingConfig.from_env, bootstrap, MIGRATIONS)
