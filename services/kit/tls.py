"""Service identity by mutual TLS: certificate files, gRPC credentials, the caller from the peer certificate.

With `ADSMON_TRANSPORT=tls` (the default) every server requires a client certificate signed by the
configured CA (a call without one, or with one from another CA, fails the TLS handshake: the client
sees UNAVAILABLE and the RPC never reaches the service), and the caller is the identity in that
certificate: the last path segment of its SPIFFE URI SAN (`spiffe://adsmon.local/ads` -> `ads`), or
its CN when it has no URI SAN. The per-method allow list (`services.kit.auth.Policy`) then decides
as it does for bearer tokens. Outgoing calls present the service's own certificate.

Under mTLS the certificate is the identity: clients send no bearer token and servers ignore one.
`deploy/local/dev-ca.sh` makes a development CA and a certificate per identity.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from services.kit.auth import CALLER_RE
from services.kit.errors import Unauthenticated
from services.kit.startup import StartupError

DEFAULT_TRUST_DOMAIN = "adsmon.local"
_SPIFFE_RE = re.compile(r"^spiffe://([^/]+)(/[^?#]*)$")


@dataclass(frozen=True)
class TlsFiles:
    """One identity's certificate chain and private key (PEM), and the CA that peers must be signed by."""

    cert_file: str
    key_file: str
    ca_file: str

    @classmethod
    def in_dir(cls, directory: str | Path, name: str) -> TlsFiles:
        """`<name>.crt`, `<name>.key` and `ca.crt` in `directory` (the layout dev-ca.sh writes)."""
        d = Path(directory)
        return cls(str(d / f"{name}.crt"), str(d / f"{name}.key"), str(d / "ca.crt"))

    def read(self) -> tuple[bytes, bytes, bytes]:
        """(certificate chain, private key, CA certificates); a missing or non-PEM file is a StartupError."""
        parts = []
        for what, path in (("certificate", self.cert_file), ("key", self.key_file), ("CA", self.ca_file)):
            try:
                data = Path(path).read_bytes()
            except OSError as exc:
                raise StartupError(f"cannot read the TLS {what} file {path} ({exc.strerror})") from None
            if b"-----BEGIN " not in data:
                raise StartupError(f"the TLS {what} file {path} is not PEM")
            parts.append(data)
        return parts[0], parts[1], parts[2]


def server_credentials(files: TlsFiles) -> grpc.ServerCredentials:
    """Server credentials that require (and verify against the CA) a client certificate on every connection."""
    cert, key, ca = files.read()
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=True)


def channel_credentials(files: TlsFiles) -> grpc.ChannelCredentials:
    """Channel credentials presenting `files`' certificate and trusting only servers signed by its CA."""
    cert, key, ca = files.read()
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)


def identity(spiffe_ids: list[str], common_name: str, *, trust_domain: str = DEFAULT_TRUST_DOMAIN) -> str:
    """The caller named by a peer certificate: its SPIFFE id in `trust_domain`, else its CN.

    A SPIFFE id in another trust domain, a path whose last segment is not a caller name, or no usable
    name at all is UNAUTHENTICATED (the handshake proved the CA signed it, not who it is).
    """
    if spiffe_ids:
        for spiffe_id in spiffe_ids:
            match = _SPIFFE_RE.match(spiffe_id)
            if match is None or match.group(1) != trust_domain:
                continue
            name = match.group(2).rstrip("/").rsplit("/", 1)[-1]
            if CALLER_RE.match(name):
                return name
        raise Unauthenticated("UNKNOWN_PEER_IDENTITY",
                              f"the client certificate's SPIFFE id is not a caller in {trust_domain}",
                              spiffe_id=spiffe_ids[0])
    if common_name and CALLER_RE.match(common_name):
        return common_name
    raise Unauthenticated("UNKNOWN_PEER_IDENTITY",
                          "the client certificate names no caller (no SPIFFE URI SAN, no usable CN)")


def _values(auth_context: Mapping[str, Any], key: str) -> list[str]:
    return [v.decode(errors="replace") if isinstance(v, bytes) else str(v) for v in auth_context.get(key, ())]


class PeerCertificateAuthenticator:
    """The caller from the verified client certificate of the connection (grpc's auth_context)."""

    def __init__(self, trust_domain: str = DEFAULT_TRUST_DOMAIN) -> None:
        self.trust_domain = trust_domain

    def authenticate(self, metadata: Mapping[str, str], context: Any) -> str:
        auth_context = context.auth_context() or {}
        if _values(auth_context, "transport_security_type") != ["ssl"]:
            raise Unauthenticated("MISSING_CREDENTIALS", "a client certificate is required")
        uris = _values(auth_context, "peer_uri") or [
            v for v in _values(auth_context, "x509_subject_alternative_name") if v.startswith("spiffe://")]
        spiffe = [u for u in uris if u.startswith("spiffe://")]
        common_names = _values(auth_context, "x509_common_name")
        return identity(spiffe, common_names[0] if common_names else "", trust_domain=self.trust_domain)
