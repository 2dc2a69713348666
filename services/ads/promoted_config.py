"""Promoted profiles' settings, read once from the environment (ADSMON_ADS_PROMOTED_*; kit.config.Env)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

from services.kit.config import ConfigError, Env


def derived_token_key(auth_secret: bytes) -> bytes:
    """The placement tokens' key when none is configured: a key of its own, derived so that knowing a
    placement token's MAC reveals nothing about the service-to-service secret."""
    return hmac.new(auth_secret, b"adsmon ads placement tokens v1", hashlib.sha256).digest()


@dataclass(frozen=True)
class PromotedSettings:
    token_key: bytes = b""  # HMAC key of placement tokens: PROMOTED_TOKEN_KEY_FILE, else derived from the auth secret
    reserve_connects: int = 1  # the least a click costs
    click_window: timedelta = timedelta(minutes=30)  # how long a placement token can be clicked
    frequency_cap: int = 3  # impressions of one campaign per viewer per UTC day
    pacing: bool = True
    pacing_headroom_seconds: int = 3600  # how far ahead of an even spread through the day a campaign may spend
    click_dedup: bool = True  # one charge per placement token (off: one per click request)
    default_quality_bps: int = 10_000  # quality of a new campaign (1.0) until the quality model sets it
    sync_interval_seconds: float = 0.5  # how often the index polls the database for other replicas' changes
    pending_click_after_seconds: float = 30.0  # a click still unconfirmed this long is finished by the resumer

    def __repr__(self) -> str:  # never print the key
        return f"PromotedSettings(reserve={self.reserve_connects}, cap={self.frequency_cap}, ...)"

    @classmethod
    def from_env(cls, auth_secret: bytes, environ: Mapping[str, str] | None = None) -> PromotedSettings:
        env = Env("ads", environ)
        try:
            key = env.secret("PROMOTED_TOKEN_KEY")
        except ConfigError as exc:
            if "missing setting" not in str(exc):
                raise
            key = derived_token_key(auth_secret)
        return cls(
            token_key=key,
            reserve_connects=env.int("PROMOTED_RESERVE_CONNECTS", 1, lo=1, hi=10_000),
            click_window=timedelta(seconds=env.int("PROMOTED_CLICK_WINDOW_SECONDS", 1800, lo=10, hi=7 * 86_400)),
            frequency_cap=env.int("PROMOTED_FREQUENCY_CAP", 3, lo=1, hi=10_000),
            pacing=env.bool("PROMOTED_PACING", True),
            pacing_headroom_seconds=env.int("PROMOTED_PACING_HEADROOM_SECONDS", 3600, lo=0, hi=86_400),
            click_dedup=env.bool("PROMOTED_CLICK_DEDUP", True),
            default_quality_bps=env.int("PROMOTED_DEFAULT_QUALITY_BPS", 10_000, lo=1, hi=1_000_000),
            sync_interval_seconds=env.float("PROMOTED_SYNC_INTERVAL_SECONDS", 0.5, lo=0.05, hi=60.0),
            pending_click_after_seconds=env.float("PROMOTED_PENDING_CLICK_AFTER_SECONDS", 30.0, lo=1.0, hi=3600.0),
        )
