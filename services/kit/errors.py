"""Domain errors that carry their gRPC status and ErrorInfo reason.

Pure Python on purpose: service domains raise these without importing grpc.
One server interceptor (`services.kit.interceptors`) turns them into a gRPC
status with a `google.rpc.ErrorInfo` detail (AIP-193).
"""

from __future__ import annotations


class DomainError(Exception):
    """An expected, client-facing failure.

    `code` is the gRPC status code name (e.g. ``FAILED_PRECONDITION``),
    `reason` an UPPER_SNAKE identifier that callers may branch on, and
    `metadata` extra machine-readable context (e.g. ``{"field": "amount"}``).
    """

    code = "FAILED_PRECONDITION"

    def __init__(self, reason: str, message: str, **metadata: object) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.metadata = {k: str(v) for k, v in metadata.items()}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.reason!r}, {self.message!r})"


class InvalidArgument(DomainError):
    """The request is malformed; retrying it unchanged cannot succeed."""

    code = "INVALID_ARGUMENT"


class NotFound(DomainError):
    """A referenced entity does not exist."""

    code = "NOT_FOUND"


class FailedPrecondition(DomainError):
    """The request is well-formed but breaks a business rule in the current state."""

    code = "FAILED_PRECONDITION"


class AlreadyExists(DomainError):
    """The entity (or the request id) already exists with different content."""

    code = "ALREADY_EXISTS"


class PermissionDenied(DomainError):
    """The authenticated caller may not do this."""

    code = "PERMISSION_DENIED"


class Unauthenticated(DomainError):
    """The caller did not prove who it is."""

    code = "UNAUTHENTICATED"


class Unavailable(DomainError):
    """A dependency is down; the request may be retried with the same request_id."""

    code = "UNAVAILABLE"


class Aborted(DomainError):
    """A concurrency conflict; the request may be retried with the same request_id."""

    code = "ABORTED"


class Unimplemented(DomainError):
    """The method is declared in the API but not built (yet)."""

    code = "UNIMPLEMENTED"


def require(condition: bool, field: str, message: str, reason: str = "INVALID_FIELD") -> None:
    """Raise InvalidArgument naming `field` unless `condition` holds."""
    if not condition:
        raise InvalidArgument(reason, f"{field}: {message}", field=field)
