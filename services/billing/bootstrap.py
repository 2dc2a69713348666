"""The one place where billing is wired: config, database, Kafka, servicer, consumers."""

from __future__ import annotations

from adsmon.billing.v1 import billing_pb2, billing_pb2_grpc

from services.billing.adapters.migrations import MIGRATIONS
from services.billing.config import BillingConfig
from services.billing.entrypoints.grpc_servicer import BillingServicer
from services.billing.entrypoints.ledger_consumer import handle_ledger_event
from services.kit.auth import Policy
from services.kit.bootstrap import consumer, start_foundation
from services.kit.kafka import LEDGER_TOPIC
from services.kit.server import App, ServiceRegistration

SERVICE_NAME = billing_pb2.DESCRIPTOR.services_by_name["BillingService"].full_name
POLICY = Policy.build(SERVICE_NAME, default={"marketplace", "operator", "tests"})


async def build_app(config: BillingConfig) -> App:
    base = config.base
    db, relay = start_foundation(base, MIGRATIONS)
    ledger_consumer = consumer(base, db.engine, "billing-ledger", [LEDGER_TOPIC], handle_ledger_event)
    return App(
        config=base,
        services=[ServiceRegistration(SERVICE_NAME, billing_pb2_grpc.add_BillingServiceServicer_to_server,
                                      BillingServicer(), POLICY)],
        components=[relay, ledger_consumer],
        on_close=[db.close],
    )
