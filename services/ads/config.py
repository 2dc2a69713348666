"""Ads' settings, read once from the environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from services.kit.config import Env, ServiceConfig

SERVICE = "ads"


@dataclass(frozen=True)
class AdsConfig:
    base: ServiceConfig
    connects_target: str

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AdsConfig:
        base = ServiceConfig.from_env(SERVICE, grpc_port=50052, metrics_port=9102, environ=environ)
        env = Env(SERVICE, environ)
        return cls(base=base, connects_target=env.str("CONNECTS_TARGET", "127.0.0.1:50051"))
