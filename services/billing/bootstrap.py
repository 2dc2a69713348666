"""The one place where billing is wired: config, database, Kafka, provider, ledger client, servicer, workers,
and the books (revenue consumer, reconciliation) through `build_books`."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from adsmon.billing.v1 import billing_pb2, billing_pb2_grpc

from services.billing.adapters import topics
from services.billing.adapters.lookup import SqlAlchemyPurchaseLookup
from services.billing.adapters.metrics import PrometheusMetrics
from services.billing.adapters.migrations import MIGRATIONS
from services.billing.adapters.repository import BillingUnitOfWork
from services.billing.adapters.sandbox_provider import HttpSandboxProvider, SandboxCore, SandboxPaymentProvider
from services.billing.config import SERVICE, BillingConfig
from services.billing.domain.membership import PlanTerms
from services.billing.entrypoints.grpc_servicer import BillingServicer, Books
from services.billing.entrypoints.revenue_wiring import BooksSettings, build_books
from services.billing.entrypoints.webhooks_http import WebhookServer
from services.billing.entrypoints.workers import PendingResumer, RenewalScheduler
from services.billing.service_layer.context import Context, RetryPolicy
from services.billing.service_layer.payments import PaymentProvider
from services.billing.service_layer.revenue_ports import PaymentRecords
from services.billing.service_layer.webhooks import handle_provider_event
from services.connects.client import AbstractConnectsClient, GrpcConnectsClient
from services.kit.auth import Policy
from services.kit.bootstrap import outbox_relay, start_foundation
from services.kit.db import Database
from services.kit.main import ServiceSpec
from services.kit.server import App, Component, ServiceRegistration
from services.kit.startup import StartupError
from services.kit.worker import Worker

SERVICE_NAME = billing_pb2.DESCRIPTOR.services_by_name["BillingService"].full_name
# RecordChargeback is for the payment side (operators reporting a reversal; the provider's disputes arrive as
# webhooks); the books (GetRevenueReport, Reconcile) are finance operators'; the marketplace buys and reads.
POLICY = Policy.build(SERVICE_NAME, default={"marketplace", "operator"},
                      methods={"RecordChargeback": {"operator"}, "GetRevenueReport": {"operator"},
                               "Reconcile": {"operator"}})


def utc_now() -> datetime:
    return datetime.now(UTC)


def make_provider(config: BillingConfig) -> SandboxPaymentProvider | HttpSandboxProvider:
    """The sandbox as its own process when ADSMON_BILLING_PAYMENT_PROVIDER_URL names it, else in-process."""
    if config.payment_provider_url:
        return HttpSandboxProvider(config.payment_provider_url)
    return SandboxPaymentProvider(SandboxCore(capture_delay=config.sandbox_capture_delay_seconds))


def bootstrap(config: BillingConfig, *, database: Database | None = None, relay: Worker | None = None,
              provider: PaymentProvider | None = None, ledger: AbstractConnectsClient | None = None,
              clock: Callable[[], datetime] = utc_now, books: Books | None = None) -> App:
    """Wire billing; every collaborator defaults to the real one built from `config`. The provider is also the
    books' PaymentRecords (what it captured and took back); `books` replaces the books' servicer and parts."""
    base = config.base
    database = database or start_foundation(base, MIGRATIONS, produces=topics.PRODUCES, consumes=topics.CONSUMES)
    if relay is None and base.relay_in_process:
        relay = outbox_relay(base, database.engine)
    wake = relay.wake if relay is not None else None
    engine = database.engine
    provider = provider or make_provider(config)
    if books is None and not isinstance(provider, PaymentRecords):
        raise StartupError(f"billing: the payment provider {type(provider).__name__} keeps no PaymentRecords "
                           "for the books' reconciliation")
    ledger = ledger or GrpcConnectsClient(config.connects_target, secret=base.auth_secret,
                                          caller=SERVICE, tls=base.tls)
    ctx = Context(
        uow=lambda: BillingUnitOfWork(engine, after_commit=wake), provider=provider, ledger=ledger,
        clock=clock, metrics=PrometheusMetrics(), terms=PlanTerms(plus_fee_cents=config.plus_fee_cents),
        retry=RetryPolicy(resume_after=timedelta(seconds=config.resume_after_seconds),
                          renewal_retry_after=timedelta(seconds=config.renewal_retry_after_seconds),
                          renewal_attempts=config.renewal_attempts))
    components: list[Component] = [relay] if relay is not None else []
    if config.payment_provider_url:
        components.append(WebhookServer(lambda e: handle_provider_event(ctx, e), port=config.webhook_port))
    else:
        provider.subscribe(lambda e: handle_provider_event(ctx, e))
    if books is None:
        assert isinstance(provider, PaymentRecords)
        books, books_parts = build_books(
            base, engine, clock=clock, connects=ledger, purchases=SqlAlchemyPurchaseLookup(engine),
            provider=provider, relay_wake=wake,
            settings=BooksSettings(reconcile_interval=config.reconcile_interval_seconds,
                                   reconcile_settle=config.reconcile_settle_seconds))
        components += books_parts
    components += [
        PendingResumer(ctx, interval=config.resumer_interval_seconds),
        RenewalScheduler(ctx, interval=config.renewal_interval_seconds),
    ]
    closers: list[Callable[[], Any]] = [provider.close, database.close]
    if isinstance(ledger, GrpcConnectsClient):
        closers.insert(0, ledger.close)
    return App(
        config=base,
        services=[ServiceRegistration(SERVICE_NAME, billing_pb2_grpc.add_BillingServiceServicer_to_server,
                                      BillingServicer(ctx, database.run, books), POLICY)],
        components=components,
        on_close=closers,
    )


SPEC = ServiceSpec(SERVICE, BillingConfig.from_env, bootstrap, MIGRATIONS)
