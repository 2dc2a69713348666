"""Container health check: exit 0 when the local gRPC server reports SERVING.

Used by deploy/compose.yaml and deploy/k8s (`python /app/healthcheck.py <port>`; Kubernetes' native gRPC
probe cannot present a client certificate). It reads the container's own settings: under mutual TLS (the
default) it presents the service's certificate from ADSMON_TLS_CERT_FILE / ADSMON_TLS_KEY_FILE /
ADSMON_TLS_CA_FILE (any identity of the CA may call health); with ADSMON_TRANSPORT=plaintext it calls
plaintext. Exit codes: 0 SERVING, 1 anything else (NOT_SERVING during graceful shutdown, unreachable,
timeout, TLS files missing).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def credentials(environ: Mapping[str, str]) -> grpc.ChannelCredentials | None:
    """The container's client credentials (None: plaintext); a missing TLS file raises OSError."""
    if environ.get("ADSMON_TRANSPORT", "tls").strip().lower() == "plaintext":
        return None
    cert, key, ca = (Path(environ.get(f"ADSMON_TLS_{n}_FILE", "") or "/nonexistent") for n in ("CERT", "KEY", "CA"))
    return grpc.ssl_channel_credentials(root_certificates=ca.read_bytes(), private_key=key.read_bytes(),
                                        certificate_chain=cert.read_bytes())


def check(port: int, host: str = "127.0.0.1", service: str = "", timeout: float = 2.0,
          environ: Mapping[str, str] | None = None) -> bool:
    try:
        creds = credentials(os.environ if environ is None else environ)
    except OSError as exc:
        print(f"healthcheck: cannot read the TLS files ({exc}); set ADSMON_TLS_CERT_FILE, ADSMON_TLS_KEY_FILE, "
              "ADSMON_TLS_CA_FILE or ADSMON_TRANSPORT=plaintext", file=sys.stderr)
        return False
    target = f"{host}:{port}"
    with grpc.secure_channel(target, creds) if creds else grpc.insecure_channel(target) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not argv[0].isdigit():
        print("usage: healthcheck.py GRPC_PORT", file=sys.stderr)
        return 2
    return 0 if check(int(argv[0])) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
