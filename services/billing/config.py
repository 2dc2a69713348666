"""Billing's settings, read once from the environment (ADSMON_BILLING_<NAME>, then ADSMON_<NAME>)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from services.kit.config import ConfigError, Env, ServiceConfig

SERVICE = "billing"


@dataclass(frozen=True)
class BillingConfig:
    base: ServiceConfig
    connects_target: str
    # "" runs the sandbox payment provider in-process; an http://host:port URL uses the sandbox process there
    # (`python -m services.billing.adapters.sandbox_provider`), whose webhooks POST to webhook_port.
    payment_provider_url: str = ""
    webhook_port: int = 0
    plus_fee_cents: int = 1999
    resume_after_seconds: float = 5.0
    resumer_interval_seconds: float = 1.0
    renewal_interval_seconds: float = 30.0
    renewal_retry_after_seconds: float = 86_400.0
    renewal_attempts: int = 3
    sandbox_capture_delay_seconds: float = 0.3
    # The books: how often the scheduled reconciliation runs, and how old a fact must be to be compared.
    reconcile_interval_seconds: float = 3600.0
    reconcile_settle_seconds: float = 300.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> BillingConfig:
        base = ServiceConfig.from_env(SERVICE, grpc_port=50053, metrics_port=9103, environ=environ)
        env = Env(SERVICE, environ)
        url = env.str("PAYMENT_PROVIDER_URL", "")
        if url and not url.startswith(("http://", "https://")):
            raise ConfigError(f"ADSMON_BILLING_PAYMENT_PROVIDER_URL={url!r} must be an http(s):// URL or empty")
        return cls(
            base=base,
            connects_target=env.str("CONNECTS_TARGET", "127.0.0.1:50051"),
            payment_provider_url=url,
            webhook_port=env.int("WEBHOOK_PORT", 0, lo=0, hi=65535),
            plus_fee_cents=env.int("PLUS_FEE_CENTS", 1999, lo=1, hi=1_000_000),
            resume_after_seconds=env.float("RESUME_AFTER_SECONDS", 5.0, lo=0.0, hi=3600.0),
            resumer_interval_seconds=env.float("RESUMER_INTERVAL_SECONDS", 1.0, lo=0.01, hi=3600.0),
            renewal_interval_seconds=env.float("RENEWAL_INTERVAL_SECONDS", 30.0, lo=0.01, hi=86_400.0),
            renewal_retry_after_seconds=env.float("RENEWAL_RETRY_AFTER_SECONDS", 86_400.0, lo=0.0,
                                                  hi=30 * 86_400.0),
            renewal_attempts=env.int("RENEWAL_ATTEMPTS", 3, lo=1, hi=20),
            sandbox_capture_delay_seconds=env.float("SANDBOX_CAPTURE_DELAY_SECONDS", 0.3, lo=0.0, hi=600.0),
            reconcile_interval_seconds=env.float("RECONCILE_INTERVAL_SECONDS", 3600.0, lo=1.0, hi=7 * 86400.0),
            reconcile_settle_seconds=env.float("RECONCILE_SETTLE_SECONDS", 300.0, lo=0.0, hi=86400.0),
        )
