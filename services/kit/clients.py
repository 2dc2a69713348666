"""gRPC client channels for calling other adsmon services."""

from __future__ import annotations

import time

import grpc

from services.kit.auth import mint_token
from services.kit.interceptors import ClientInterceptor


class TokenSource:
    """Mints a fresh bearer token for `caller` shortly before the previous one expires."""

    def __init__(self, secret: bytes, caller: str, ttl_seconds: int = 900) -> None:
        self._secret = secret
        self._caller = caller
        self._ttl = ttl_seconds
        self._token = ""
        self._renew_at = 0.0

    def __call__(self) -> str:
        now = time.time()
        if now >= self._renew_at:
            self._token = mint_token(self._secret, self._caller, ttl_seconds=self._ttl, now=now)
            self._renew_at = now + self._ttl / 2
        return self._token


def channel(target: str, *, secret: bytes, caller: str, default_timeout: float = 5.0) -> grpc.aio.Channel:
    """An aio channel to `target` that authenticates as `caller`, propagates the
    request id and deadline of the RPC being served, and records grpc_client_* metrics."""
    return grpc.aio.insecure_channel(
        target,
        interceptors=[ClientInterceptor(TokenSource(secret, caller), default_timeout)],
        options=[("grpc.keepalive_time_ms", 30_000), ("grpc.enable_retries", 1)],
    )
