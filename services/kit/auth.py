"""Service-to-service authentication and per-method authorisation.

Every call carries ``authorization: Bearer adsmon1.<caller>.<expiry>.<mac>``,
an HMAC-SHA256 over ``adsmon1.<caller>.<expiry>`` with the suite's shared
secret (read from a file, never from code or logs). The server checks the
MAC and expiry, then a per-method policy naming which callers may call it.
The verified caller name is available to the service layer through
`current_caller()` for finer rules (e.g. only billing may credit PURCHASE).

That is the plaintext transport (ADSMON_TRANSPORT=plaintext, local runs only). With mutual TLS the
caller comes from the client certificate instead (`services.kit.tls.PeerCertificateAuthenticator`),
behind the same `CallerAuthenticator` seam; the policy and the service-layer checks stay as they are.
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import re
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from services.kit.errors import PermissionDenied, Unauthenticated

TOKEN_PREFIX = "adsmon1"  # noqa: S105 - a version tag, not a secret
CALLER_RE = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
_caller_var: contextvars.ContextVar[str] = contextvars.ContextVar("caller", default="")

# RPCs anyone may call without a token: probes and tooling.
PUBLIC_SERVICES = frozenset({"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection",
                             "grpc.reflection.v1.ServerReflection"})


def current_caller() -> str:
    """The authenticated caller of the RPC being served ('' outside an RPC)."""
    return _caller_var.get()


def set_current_caller(caller: str) -> contextvars.Token[str]:
    return _caller_var.set(caller)


def reset_current_caller(token: contextvars.Token[str]) -> None:
    _caller_var.reset(token)


def _mac(secret: bytes, body: str) -> str:
    return hmac.new(secret, body.encode(), hashlib.sha256).hexdigest()


def mint_token(secret: bytes, caller: str, *, ttl_seconds: int = 3600, now: float | None = None) -> str:
    """A bearer token proving `caller` knows the shared secret, valid for `ttl_seconds`."""
    if not CALLER_RE.match(caller):
        raise ValueError(f"caller name {caller!r} must match {CALLER_RE.pattern}")
    expiry = int((time.time() if now is None else now) + ttl_seconds)
    body = f"{TOKEN_PREFIX}.{caller}.{expiry}"
    return f"{body}.{_mac(secret, body)}"


class CallerAuthenticator(Protocol):
    """Names the caller of an RPC from its metadata or its connection, or raises Unauthenticated."""

    def authenticate(self, metadata: Mapping[str, str], context: Any) -> str: ...


class Authenticator:
    """Verifies bearer tokens minted with the same secret."""

    # Verified tokens kept (until they expire) so that a caller's every RPC does not pay for an HMAC.
    CACHE_SIZE = 1024

    def __init__(self, secret: bytes, *, max_ttl_seconds: int = 24 * 3600) -> None:
        self._secret = secret
        self._max_ttl = max_ttl_seconds
        self._verified: dict[str, tuple[str, int]] = {}

    def authenticate(self, metadata: Mapping[str, str], context: Any) -> str:
        """The caller named by the RPC's `authorization: Bearer` token."""
        return self.verify(metadata.get("authorization"))

    def verify(self, authorization: str | None, *, now: float | None = None) -> str:
        """Return the caller named by a valid ``Bearer`` token or raise Unauthenticated."""
        cached = self._verified.get(authorization) if authorization else None
        if cached is not None:
            caller, expiry = cached
            now = time.time() if now is None else now
            if now <= expiry <= now + self._max_ttl:
                return caller
        caller, expiry = self._verify(authorization, now)
        if len(self._verified) >= self.CACHE_SIZE:
            self._verified.clear()
        self._verified[authorization] = (caller, expiry)  # type: ignore[index]
        return caller

    def _verify(self, authorization: str | None, now: float | None) -> tuple[str, int]:
        if not authorization:
            raise Unauthenticated("MISSING_CREDENTIALS", "authorization metadata is required")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("BAD_CREDENTIALS", "authorization must be 'Bearer <token>'")
        parts = token.split(".")
        if len(parts) != 4 or parts[0] != TOKEN_PREFIX:
            raise Unauthenticated("BAD_CREDENTIALS", "malformed token")
        _, caller, expiry_s, mac = parts
        body = f"{TOKEN_PREFIX}.{caller}.{expiry_s}"
        if not hmac.compare_digest(mac, _mac(self._secret, body)):
            raise Unauthenticated("BAD_CREDENTIALS", "token signature does not verify")
        now = time.time() if now is None else now
        if not expiry_s.isdigit() or int(expiry_s) < now:
            raise Unauthenticated("TOKEN_EXPIRED", "token has expired")
        if int(expiry_s) > now + self._max_ttl:
            raise Unauthenticated("BAD_CREDENTIALS", "token lifetime is too long")
        return caller, int(expiry_s)


@dataclass(frozen=True)
class Policy:
    """Which callers may call which methods of one gRPC service.

    `methods` maps a method name (e.g. "Credit") to allowed callers; `default`
    applies to methods not listed. An empty set means nobody.
    """

    service: str
    default: frozenset[str]
    methods: Mapping[str, frozenset[str]] = field(default_factory=dict)

    @classmethod
    def build(cls, service: str, default: Iterable[str],
              methods: Mapping[str, Iterable[str]] | None = None) -> Policy:
        return cls(service, frozenset(default),
                   {m: frozenset(c) for m, c in (methods or {}).items()})

    def check(self, method: str, caller: str) -> None:
        allowed = self.methods.get(method, self.default)
        if caller not in allowed:
            raise PermissionDenied("CALLER_NOT_ALLOWED",
                                   f"caller {caller!r} may not call {self.service}/{method}",
                                   caller=caller, method=method)


def main(argv: list[str]) -> int:
    """`python -m services.kit.auth mint <caller> [ttl]`: print a token (secret from env).

    A missing or unreadable setting, or a bad argument, is one line on stderr and exit code 2.
    """
    from services.kit.config import ConfigError, Env

    if not 2 <= len(argv) <= 3 or argv[0] != "mint":
        print("usage: python -m services.kit.auth mint <caller> [ttl_seconds]", file=sys.stderr)
        return 2
    if len(argv) > 2 and not argv[2].isdigit():
        print(f"mint: ttl_seconds must be a whole number of seconds, not {argv[2]!r}", file=sys.stderr)
        return 2
    env = Env("cli")
    if not (env.str("AUTH_SECRET_FILE", "") or env.str("AUTH_SECRET", "")):
        print("mint: missing setting ADSMON_AUTH_SECRET_FILE (the shared secret file, e.g. "
              ".local/secrets/auth_secret)", file=sys.stderr)
        return 2
    try:
        ttl = int(argv[2]) if len(argv) > 2 else 3600
        token = mint_token(env.secret("AUTH_SECRET"), argv[1], ttl_seconds=ttl)
    except (ConfigError, ValueError) as exc:
        print(f"mint: {exc}", file=sys.stderr)
        return 2
    print(token)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
