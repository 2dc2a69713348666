"""Ads' settings, read once from the environment (ADSMON_ADS_* or ADSMON_*)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from services.ads.domain.badge import Pricing
from services.ads.promoted_config import PromotedSettings
from services.kit.config import ConfigError, Env, ServiceConfig

SERVICE = "ads"
DAY = 86_400


@dataclass(frozen=True)
class AdsConfig:
    base: ServiceConfig
    connects_target: str
    auction_length: timedelta = timedelta(days=7)
    hold_ttl: timedelta = timedelta(days=30)  # comfortably longer than an auction plus its settlement
    placebo_share: float = 0.02
    pending_bid_grace: timedelta = timedelta(seconds=30)
    badge_pricing: Pricing = field(default_factory=Pricing)
    badge_pricing_interval_seconds: float = 60.0
    badge_meter_interval_seconds: float = 5.0
    search_flush_interval_seconds: float = 5.0  # GetPlacements' searches reach ads_search_counts this often
    closer_interval_seconds: float = 5.0
    settlement_interval_seconds: float = 1.0
    settlement_concurrency: int = 8
    consume_jobs: bool = True
    handler_threads: int = 32  # PlaceBid and StartBadge wait on the ledger: more threads than DB connections
    # Promoted profiles (ADSMON_ADS_PROMOTED_*); an empty token key is derived from the auth secret at bootstrap.
    promoted: PromotedSettings = field(default_factory=PromotedSettings)
    promoted_threads: int = 8  # the promoted RPCs' thread pool (database, ledger); GetPlacements runs on the loop

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AdsConfig:
        base = ServiceConfig.from_env(SERVICE, grpc_port=50052, metrics_port=9102, environ=environ)
        env = Env(SERVICE, environ)
        auction = env.int("AUCTION_LENGTH_SECONDS", 7 * DAY, lo=1, hi=60 * DAY)
        ttl = env.int("HOLD_TTL_SECONDS", 30 * DAY, lo=60, hi=90 * DAY)
        if ttl < auction + 3600:
            raise ConfigError(f"ADSMON_ADS_HOLD_TTL_SECONDS={ttl} must exceed the auction length ({auction}s) "
                              "by at least an hour, so no boost hold expires before its auction settles")
        min_price = env.int("BADGE_MIN_PRICE", 1, lo=1, hi=10_000)
        max_price = env.int("BADGE_MAX_PRICE", 168, lo=1, hi=10_000)
        if max_price < min_price:
            raise ConfigError(f"ADSMON_ADS_BADGE_MAX_PRICE={max_price} is below ADSMON_ADS_BADGE_MIN_PRICE={min_price}")
        return cls(
            base=base,
            connects_target=env.str("CONNECTS_TARGET", "127.0.0.1:50051"),
            auction_length=timedelta(seconds=auction),
            hold_ttl=timedelta(seconds=ttl),
            placebo_share=env.float("PLACEBO_SHARE", 0.02, lo=0.0, hi=1.0),
            pending_bid_grace=timedelta(seconds=env.float("PENDING_BID_GRACE_SECONDS", 30.0, lo=0.0, hi=3600.0)),
            badge_pricing=Pricing(
                base_price=env.int("BADGE_BASE_PRICE", 7, lo=0, hi=10_000),
                badges_per_step=env.int("BADGE_BADGES_PER_STEP", 10, lo=1, hi=1_000_000),
                searches_per_step=env.int("BADGE_SEARCHES_PER_STEP", 1000, lo=1, hi=10**9),
                min_price=min_price, max_price=max_price),
            badge_pricing_interval_seconds=env.float("BADGE_PRICING_INTERVAL_SECONDS", 60.0, lo=0.1, hi=86_400.0),
            badge_meter_interval_seconds=env.float("BADGE_METER_INTERVAL_SECONDS", 5.0, lo=0.05, hi=3600.0),
            search_flush_interval_seconds=env.float("SEARCH_FLUSH_INTERVAL_SECONDS", 5.0, lo=0.05, hi=3600.0),
            closer_interval_seconds=env.float("CLOSER_INTERVAL_SECONDS", 5.0, lo=0.05, hi=3600.0),
            settlement_interval_seconds=env.float("SETTLEMENT_INTERVAL_SECONDS", 1.0, lo=0.05, hi=3600.0),
            settlement_concurrency=env.int("SETTLEMENT_CONCURRENCY", 8, lo=1, hi=64),
            consume_jobs=env.bool("CONSUME_JOBS", True),
            handler_threads=env.int("HANDLER_THREADS", 32, lo=1, hi=512),
            promoted=PromotedSettings.from_env(base.auth_secret, environ),
            promoted_threads=env.int("PROMOTED_THREADS", 8, lo=1, hi=512),
        )
