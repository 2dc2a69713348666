"""gRPC client channels for calling other adsmon services."""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from typing import Any

import grpc

from services.kit import metrics
from services.kit.auth import mint_token
from services.kit.interceptors import ClientInterceptor, outgoing_call


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


class _SyncClientInterceptor(grpc.UnaryUnaryClientInterceptor):
    """The blocking twin of ClientInterceptor, for calls made from worker threads and use cases."""

    def __init__(self, token_source: Callable[[], str], default_timeout: float) -> None:
        self.token_source = token_source
        self.default_timeout = default_timeout

    def intercept_unary_unary(self, continuation: Callable[[Any, Any], Any], client_call_details: Any,
                                    request: Any) -> Any:
        labels, md, timeout = outgoing_call(client_call_details, self.token_source, self.default_timeout)
        details = _CallDetails(client_call_details.method, timeout, md, client_call_details.credentials,
                               client_call_details.wait_for_ready, client_call_details.compression)
        metrics.client_started.labels(*labels).inc()
        started = time.perf_counter()
        outcome = continuation(details, request)
        metrics.client_handling.labels(*labels).observe(time.perf_counter() - started)
        metrics.client_handled.labels(*labels, metrics.go_code(outcome.code())).inc()
        return outcome


class _CallDetails(
    collections.namedtuple("_CallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready",
                                            "compression")),
    grpc.ClientCallDetails,
):
    pass


def sync_channel(target: str, *, secret: bytes, caller: str, default_timeout: float = 5.0) -> grpc.Channel:
    """A blocking channel to `target` with the same auth, request-id, deadline and metrics as `channel`."""
    inner = grpc.insecure_channel(target, options=[("grpc.keepalive_time_ms", 30_000)])
    return grpc.intercept_channel(inner, _SyncClientInterceptor(TokenSource(secret, caller), default_timeout))
