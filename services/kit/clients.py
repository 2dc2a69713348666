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
from services.kit.tls import TlsFiles, channel_credentials

_OPTIONS = [("grpc.keepalive_time_ms", 30_000)]


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


def _token_source(secret: bytes | None, caller: str, tls: TlsFiles | None) -> Callable[[], str] | None:
    """Bearer tokens on plaintext; none under mutual TLS (the client certificate is the identity)."""
    if tls is not None:
        return None
    if secret is None:
        raise ValueError(f"a plaintext channel for {caller!r} needs the shared secret (or TLS files)")
    return TokenSource(secret, caller)


def channel(target: str, *, caller: str, secret: bytes | None = None, tls: TlsFiles | None = None,
            default_timeout: float = 5.0) -> grpc.aio.Channel:
    """An aio channel to `target` that authenticates as `caller` (with `tls`: mutual TLS presenting that
    certificate, which must name `caller`; else a bearer token signed with `secret`), propagates the
    request id and deadline of the RPC being served, and records grpc_client_* metrics."""
    interceptors = [ClientInterceptor(_token_source(secret, caller, tls), default_timeout)]
    options = [*_OPTIONS, ("grpc.enable_retries", 1)]
    if tls is not None:
        return grpc.aio.secure_channel(target, channel_credentials(tls), interceptors=interceptors, options=options)
    return grpc.aio.insecure_channel(target, interceptors=interceptors, options=options)


class _SyncClientInterceptor(grpc.UnaryUnaryClientInterceptor):
    """The blocking twin of ClientInterceptor, for calls made from worker threads and use cases."""

    def __init__(self, token_source: Callable[[], str] | None, default_timeout: float) -> None:
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


def sync_channel(target: str, *, caller: str, secret: bytes | None = None, tls: TlsFiles | None = None,
                 default_timeout: float = 5.0) -> grpc.Channel:
    """A blocking channel to `target` with the same auth, request-id, deadline and metrics as `channel`."""
    token_source = _token_source(secret, caller, tls)
    if tls is not None:
        inner = grpc.secure_channel(target, channel_credentials(tls), options=_OPTIONS)
    else:
        inner = grpc.insecure_channel(target, options=_OPTIONS)
    return grpc.intercept_channel(inner, _SyncClientInterceptor(token_source, default_timeout))
