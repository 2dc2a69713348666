"""gRPC RED metrics with go-grpc-prometheus names and label spellings.

Community dashboards and alerts (grpc_server_handled_total by grpc_code,
grpc_server_handling_seconds_bucket) work unchanged against these series.
"""

from __future__ import annotations

import grpc
from prometheus_client import Counter, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# grpc_code values as Go's codes.Code.String() spells them.
_GO_CODE_NAMES = {
    grpc.StatusCode.OK: "OK",
    grpc.StatusCode.CANCELLED: "Canceled",
    grpc.StatusCode.UNKNOWN: "Unknown",
    grpc.StatusCode.INVALID_ARGUMENT: "InvalidArgument",
    grpc.StatusCode.DEADLINE_EXCEEDED: "DeadlineExceeded",
    grpc.StatusCode.NOT_FOUND: "NotFound",
    grpc.StatusCode.ALREADY_EXISTS: "AlreadyExists",
    grpc.StatusCode.PERMISSION_DENIED: "PermissionDenied",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "ResourceExhausted",
    grpc.StatusCode.FAILED_PRECONDITION: "FailedPrecondition",
    grpc.StatusCode.ABORTED: "Aborted",
    grpc.StatusCode.OUT_OF_RANGE: "OutOfRange",
    grpc.StatusCode.UNIMPLEMENTED: "Unimplemented",
    grpc.StatusCode.INTERNAL: "Internal",
    grpc.StatusCode.UNAVAILABLE: "Unavailable",
    grpc.StatusCode.DATA_LOSS: "DataLoss",
    grpc.StatusCode.UNAUTHENTICATED: "Unauthenticated",
}


def go_code(code: grpc.StatusCode | None) -> str:
    return _GO_CODE_NAMES.get(code or grpc.StatusCode.OK, "Unknown")


_LABELS = ("grpc_type", "grpc_service", "grpc_method")

server_started = Counter("grpc_server_started_total",
                         "Total number of RPCs started on the server.", _LABELS)
server_handled = Counter("grpc_server_handled_total",
                         "Total number of RPCs completed on the server, regardless of success or failure.",
                         (*_LABELS, "grpc_code"))
server_msg_received = Counter("grpc_server_msg_received_total",
                              "Total number of RPC stream messages received on the server.", _LABELS)
server_msg_sent = Counter("grpc_server_msg_sent_total",
                          "Total number of gRPC stream messages sent by the server.", _LABELS)
server_handling = Histogram("grpc_server_handling_seconds",
                            "Histogram of response latency (seconds) of gRPC that had been "
                            "application-level handled by the server.", _LABELS,
                            buckets=LATENCY_BUCKETS)
server_shed = Counter("grpc_server_shed_total",
                      "RPCs refused with RESOURCE_EXHAUSTED (OVERLOADED) because the server had its "
                      "maximum of concurrent RPCs in flight.", ("grpc_service", "grpc_method"))

client_started = Counter("grpc_client_started_total",
                         "Total number of RPCs started on the client.", _LABELS)
client_handled = Counter("grpc_client_handled_total",
                         "Total number of RPCs completed by the client, regardless of success or failure.",
                         (*_LABELS, "grpc_code"))
client_handling = Histogram("grpc_client_handling_seconds",
                            "Histogram of response latency (seconds) of the gRPC until it is finished "
                            "by the application.", _LABELS, buckets=LATENCY_BUCKETS)


def split_method(full_method: str) -> tuple[str, str]:
    """'/pkg.Service/Method' -> ('pkg.Service', 'Method')."""
    parts = full_method.split("/")
    if len(parts) == 3:
        return parts[1], parts[2]
    return "unknown", full_method
