"""The connects service's settings, read once from the environment (ADSMON_CONNECTS_* or ADSMON_*)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from services.connects.domain.commands import DEFAULT_MAX_AMOUNT, MAX_AMOUNT
from services.kit.config import Env, ServiceConfig

SERVICE = "connects"


@dataclass(frozen=True)
class ConnectsConfig:
    base: ServiceConfig
    batch_max: int
    batch_workers: int
    expiry_interval_seconds: float
    consume_jobs: bool
    max_amount: int = DEFAULT_MAX_AMOUNT

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ConnectsConfig:
        env = Env(SERVICE, environ)
        return cls(
            base=ServiceConfig.from_env(SERVICE, grpc_port=50051, metrics_port=9101, environ=environ),
            batch_max=env.int("BATCH_MAX", 256, lo=1, hi=4096),
            batch_workers=env.int("BATCH_WORKERS", 1, lo=1, hi=64),
            expiry_interval_seconds=env.float("EXPIRY_INTERVAL_SECONDS", 30.0, lo=0.1, hi=86_400.0),
            consume_jobs=env.bool("CONSUME_JOBS", True),
            # The most Connects one Credit, Spend, Hold, IncreaseHold or Capture may move (AMOUNT_TOO_LARGE above).
            max_amount=env.int("MAX_AMOUNT", DEFAULT_MAX_AMOUNT, lo=1, hi=MAX_AMOUNT),
        )
