"""Wiring of the books: `build_books` makes the servicer half and the background parts.

Billing's bootstrap calls it after opening (and migrating: the books' tables
are revision 0006_revenue_books of billing's Alembic chain) the database, then delegates
GetRevenueReport, GetStatement and Reconcile to the returned servicer and
starts the returned components with the App.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.engine import Engine

from services.billing.adapters.topics import CONNECTS_LEDGER as LEDGER_TOPIC
from services.billing.entrypoints.reconcile_worker import ReconcileWorker
from services.billing.entrypoints.revenue_consumer import RevenueConsumer
from services.billing.entrypoints.revenue_servicer import BooksServicer
from services.billing.service_layer.ports import PurchaseLookup
from services.billing.service_layer.reconcile import Reconciler
from services.billing.service_layer.revenue_ports import PaymentRecords
from services.connects.client import AbstractConnectsClient
from services.kit.config import Env, ServiceConfig
from services.kit.server import Component

CONSUMER_GROUP = "billing-revenue"


@dataclass(frozen=True)
class BooksSettings:
    """ADSMON_BILLING_RECONCILE_INTERVAL_SECONDS (3600), ADSMON_BILLING_RECONCILE_SETTLE_SECONDS (300):
    how often the scheduled run goes, and how old a fact must be to be compared (the consumer's lag)."""

    reconcile_interval: float = 3600.0
    reconcile_settle: float = 300.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> BooksSettings:
        env = Env("billing", environ)
        return cls(reconcile_interval=env.float("RECONCILE_INTERVAL_SECONDS", 3600.0, lo=1.0, hi=7 * 86400.0),
                   reconcile_settle=env.float("RECONCILE_SETTLE_SECONDS", 300.0, lo=0.0, hi=86400.0))


def build_books(config: ServiceConfig, engine: Engine, *, clock: Callable[[], datetime],
                connects: AbstractConnectsClient, purchases: PurchaseLookup, provider: PaymentRecords,
                settings: BooksSettings | None = None, relay_wake: Callable[[], object] | None = None,
                ) -> tuple[BooksServicer, list[Component]]:
    """The books' servicer and its background parts (revenue consumer, scheduled reconciliation)."""
    settings = settings or BooksSettings.from_env()
    reconciler = Reconciler(engine, connects, purchases, provider, clock,
                            settle=timedelta(seconds=settings.reconcile_settle))
    consumer = RevenueConsumer(engine, config.kafka_bootstrap, config.consumer_group(CONSUMER_GROUP), [LEDGER_TOPIC],
                               service=config.service, topic_prefix=config.kafka_topic_prefix,
                               after_commit=relay_wake)
    worker = ReconcileWorker(reconciler, service=config.service, interval=settings.reconcile_interval)
    return BooksServicer(engine, purchases, reconciler), [consumer, worker]
