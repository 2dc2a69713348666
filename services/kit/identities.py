"""How tools and tests call the suite as one of its real identities (marketplace, operator, billing, ads).

Services call each other through `services.kit.clients` with their own certificate. Tools (the simulator,
the checker, `make run`'s probes, benchmarks, tests) act for several callers: under mutual TLS each
caller is a certificate in a directory laid out as `deploy/local/dev-ca.sh` writes it (`<name>.crt`,
`<name>.key`, `ca.crt`); on plaintext each is a bearer token signed with the shared secret.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import grpc

from services.kit.auth import mint_token
from services.kit.startup import StartupError
from services.kit.tls import TlsFiles, channel_credentials


def default_tls_dir(environ: Mapping[str, str] | None = None) -> Path:
    """ADSMON_TLS_DIR, else `<ADSMON_LOCAL or .local>/secrets/tls` (where `make secrets` puts the dev CA)."""
    env = os.environ if environ is None else environ
    if env.get("ADSMON_TLS_DIR"):
        return Path(env["ADSMON_TLS_DIR"])
    return Path(env.get("ADSMON_LOCAL") or ".local") / "secrets" / "tls"


class CallerCredentials:
    """Either a directory of identity certificates (mutual TLS) or the shared secret (plaintext)."""

    def __init__(self, *, secret: bytes | None = None, tls_dir: str | Path | None = None) -> None:
        if (secret is None) == (tls_dir is None):
            raise ValueError("CallerCredentials needs exactly one of secret (plaintext) or tls_dir (mutual TLS)")
        self.secret = secret
        self.tls_dir = None if tls_dir is None else Path(tls_dir)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> CallerCredentials:
        """As the services read it: ADSMON_TRANSPORT (tls by default) with ADSMON_TLS_DIR (default
        <ADSMON_LOCAL>/secrets/tls), or plaintext with ADSMON_AUTH_SECRET or ADSMON_AUTH_SECRET_FILE (default
        <ADSMON_LOCAL>/secrets/auth_secret). A missing piece is a StartupError naming it."""
        env = os.environ if environ is None else environ
        transport = (env.get("ADSMON_TRANSPORT") or "tls").strip().lower()
        if transport == "plaintext":
            if value := env.get("ADSMON_AUTH_SECRET"):
                return cls(secret=value.strip().encode())
            local = Path(env.get("ADSMON_LOCAL") or ".local")
            path = env.get("ADSMON_AUTH_SECRET_FILE") or str(local / "secrets" / "auth_secret")
            try:
                return cls(secret=Path(path).read_bytes().strip())
            except OSError as exc:
                raise StartupError(f"ADSMON_AUTH_SECRET_FILE: cannot read {path} ({exc.strerror})") from None
        if transport != "tls":
            raise StartupError(f"ADSMON_TRANSPORT={transport!r} is not one of tls, plaintext")
        directory = default_tls_dir(env)
        if not (directory / "ca.crt").is_file():
            raise StartupError(f"no development CA in {directory}: run `make secrets` (deploy/local/dev-ca.sh), "
                               "set ADSMON_TLS_DIR, or ADSMON_TRANSPORT=plaintext for a local run")
        return cls(tls_dir=directory)

    @property
    def transport(self) -> str:
        return "plaintext" if self.tls_dir is None else "tls"

    def files(self, caller: str) -> TlsFiles | None:
        """`caller`'s certificate files under mutual TLS (None on plaintext)."""
        return None if self.tls_dir is None else TlsFiles.in_dir(self.tls_dir, caller)

    def metadata(self, caller: str, ttl_seconds: int = 12 * 3600) -> tuple[tuple[str, str], ...]:
        """The call metadata that names `caller`: a bearer token on plaintext, nothing under mutual TLS."""
        if self.secret is None:
            return ()
        return (("authorization", f"Bearer {mint_token(self.secret, caller, ttl_seconds=ttl_seconds)}"),)

    def channel(self, target: str, caller: str, options: list[tuple[str, Any]] | None = None) -> grpc.Channel:
        """A blocking channel to `target`; under mutual TLS it presents `caller`'s certificate."""
        files = self.files(caller)
        if files is None:
            return grpc.insecure_channel(target, options=options)
        return grpc.secure_channel(target, channel_credentials(files), options=options)

    def aio_channel(self, target: str, caller: str,
                    options: list[tuple[str, Any]] | None = None) -> grpc.aio.Channel:
        """The asyncio twin of `channel`."""
        files = self.files(caller)
        if files is None:
            return grpc.aio.insecure_channel(target, options=options)
        return grpc.aio.secure_channel(target, channel_credentials(files), options=options)


class ChannelPool:
    """One blocking channel per (target name, caller), made on first use; `close()` closes them all."""

    def __init__(self, credentials: CallerCredentials, targets: Mapping[str, str]) -> None:
        self.credentials = credentials
        self.targets = dict(targets)
        self._channels: dict[tuple[str, str], grpc.Channel] = {}

    def __call__(self, name: str, caller: str) -> grpc.Channel:
        key = (name, caller if self.credentials.tls_dir is not None else "")  # plaintext: one channel per target
        ch = self._channels.get(key)
        if ch is None:
            ch = self._channels[key] = self.credentials.channel(self.targets[name], caller)
        return ch

    def close(self) -> None:
        for ch in self._channels.values():
            ch.close()
        self._channels.clear()
