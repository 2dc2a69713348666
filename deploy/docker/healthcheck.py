"""Container health check: exit 0 when the local gRPC server reports SERVING.

Used by deploy/compose.yaml (`python /app/healthcheck.py <port>`); Kubernetes
uses its native gRPC probe instead. Exit codes: 0 SERVING, 1 anything else
(NOT_SERVING during graceful shutdown, unreachable, timeout).
"""

from __future__ import annotations

import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def check(port: int, host: str = "127.0.0.1", service: str = "", timeout: float = 2.0) -> bool:
    with grpc.insecure_channel(f"{host}:{port}") as channel:
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
