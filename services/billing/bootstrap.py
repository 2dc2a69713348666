"""The one place where billing is wired: config, database, Kafka, provider, ledger client, servicer, workers."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from adsmon.billing.v1 import billing_pb2, billing_pb2_grpc

from services.billing.adapters.metrics import PrometheusMetrics
from services.billing.adapters.migrations import MIGRATIONS
from services.billing.adapters.repository import BillingUnitOfWork
from services.billing.adapters.sandbox_provider import HttpSandboxProvider, SandboxCore, SandboxPaymentProvider
from services.billing.config import BillingConfig
from services.billing.domain.membership import PlanTerms
from services.billing.entrypoints.grpc_servicer import BillingServicer, Books
from services.billing.entrypoints.ledger_consumer import handle_ledger_event
from services.billing.entrypoints.webhooks_http import WebhookServer
from services.billing.entrypoints.workers import PendingResumer, RenewalScheduler
from services.billing.service_layer.context import Context, RetryPolicy
from services.billing.service_layer.payments import PaymentProvider
from services.billing.service_layer.webhooks import handle_provider_event
from services.connects.client import AbstractConnectsClient, GrpcConnectsClient
from services.kit.auth import Policy
from services.kit.bootstrap import consumer, start_foundation
from services.kit.kafka import LEDGER_TOPIC
from services.kit.server import App, ServiceRegistration

SERVICE_NAME = billing_pb2.DESCRIPTOR.services_by_name["BillingService"].full_name
# RecordChargeback is for the payment side (operators reporting a reversal; the provider's disputes arrive as
# webhooks); the marketplace buys and reads.
POLICY = Policy.build(SERVICE_NAME, default={"marketplace", "operator", "tests"},
                      methods={"RecordChargeback": {"operator", "tests"}})


def utc_now() -> datetime:
    return datetime.now(UTC)


def make_provider(config: BillingConfig) -> PaymentProvider:
    if config.payment_provider_url:
        return HttpSandboxProvider(config.payment_provider_url)
    return SandboxPaymentProvider(SandboxCore(capture_delay=config.sandbox_capture_delay_seconds))


async def build_app(config: BillingConfig, *, provider: PaymentProvider | None = None,
                    ledger: AbstractConnectsClient | None = None, clock: Callable[[], datetime] = utc_now,
                    books: Books | None = None, extra_components: list[Any] | None = None) -> App:
    base = config.base
    db, relay = start_foundation(base, MIGRATIONS)
    provider = provider or make_provider(config)
    ledger = ledger or GrpcConnectsClient(config.connects_target, secret=base.auth_secret, caller="billing")
    ctx = Context(
        uow=lambda: BillingUnitOfWork(db.engine, after_commit=relay.notify), provider=provider, ledger=ledger,
        clock=clock, metrics=PrometheusMetrics(), terms=PlanTerms(plus_fee_cents=config.plus_fee_cents),
        retry=RetryPolicy(resume_after=timedelta(seconds=config.resume_after_seconds),
                          renewal_retry_after=timedelta(seconds=config.renewal_retry_after_seconds),
                          renewal_attempts=config.renewal_attempts))
    components: list[Any] = [relay]
    if config.payment_provider_url:
        components.append(WebhookServer(lambda e: handle_provider_event(ctx, e), port=config.webhook_port))
    else:
        provider.subscribe(lambda e: handle_provider_event(ctx, e))
    components += [
        consumer(base, db.engine, "billing-ledger", [LEDGER_TOPIC], handle_ledger_event),
        PendingResumer(ctx, interval=config.resumer_interval_seconds),
        RenewalScheduler(ctx, interval=config.renewal_interval_seconds),
        *(extra_components or []),
    ]
    servicer = BillingServicer(ctx, db.run, books)
    closers: list[Callable[[], Any]] = [provider.close, db.close]
    if isinstance(ledger, GrpcConnectsClient):
        closers.insert(0, ledger.close)
    return App(
        config=base,
        services=[ServiceRegistration(SERVICE_NAME, billing_pb2_grpc.add_BillingServiceServicer_to_server,
                                      servicer, POLICY)],
        components=components,
        on_close=closers,
    )
