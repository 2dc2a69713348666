"""Server and client interceptors: auth, deadlines, request ids, logging, metrics, errors.

This is the one place where domain errors become gRPC statuses with a
`google.rpc.ErrorInfo` detail, and where unexpected failures are logged,
counted and hidden behind a generic INTERNAL (or UNAVAILABLE for a database
that is down) so that no stack trace or secret reaches a caller.
"""

from __future__ import annotations

import contextvars
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from services.kit import metrics
from services.kit.auth import PUBLIC_SERVICES, Authenticator, Policy, reset_current_caller, set_current_caller
from services.kit.errors import DomainError, InvalidArgument, Unimplemented
from services.kit.logging import request_id_var, rpc_method_var

log = logging.getLogger("adsmon.rpc")

# Absolute deadline (time.monotonic()) of the RPC being served, for propagation to calls we make.
deadline_var: contextvars.ContextVar[float | None] = contextvars.ContextVar("deadline", default=None)

MAX_REQUEST_ID_LEN = 128


def error_status(code: grpc.StatusCode, reason: str, message: str, domain: str,
                 metadata: Mapping[str, str] | None = None) -> grpc.Status:
    """A grpc.Status carrying google.rpc.Status with one ErrorInfo detail."""
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.ErrorInfo(reason=reason, domain=domain, metadata=dict(metadata or {})))
    return rpc_status.to_status(status_pb2.Status(code=code.value[0], message=message, details=[detail]))


def _infrastructure_status(exc: BaseException, domain: str) -> grpc.Status | None:
    if isinstance(exc, PoolTimeout | OperationalError) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    ):
        return error_status(grpc.StatusCode.UNAVAILABLE, "DATABASE_UNAVAILABLE",
                            "the database is unavailable; retry with the same request_id", domain)
    return None


class _Malformed:
    """Stands in for a request whose bytes did not parse, so the interceptor can answer INVALID_ARGUMENT."""

    __slots__ = ("error",)

    def __init__(self, error: str) -> None:
        self.error = error


def _lenient(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """gRPC answers INTERNAL when deserialisation fails (e.g. invalid UTF-8 in a string field);
    it is the caller's mistake, so hand the failure to the interceptor instead."""
    if deserializer is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as exc:
            return _Malformed(type(exc).__name__)

    return parse


class ServerInterceptor(grpc.aio.ServerInterceptor):
    """Wraps every unary-unary handler of the server."""

    def __init__(self, service: str, authenticator: Authenticator, policies: Mapping[str, Policy]) -> None:
        self.domain = f"{service}.adsmon"
        self.authenticator = authenticator
        self.policies = policies
        self._metric_children: dict[tuple[str, str], tuple[Any, ...]] = {}
        self._handlers: dict[str, grpc.RpcMethodHandler] = {}

    def _children(self, grpc_service: str, grpc_method: str) -> tuple[Any, ...]:
        """The method's labelled metric children, looked up once (a labels() call per RPC costs a lock
        and a dict lookup per series)."""
        key = (grpc_service, grpc_method)
        children = self._metric_children.get(key)
        if children is None:
            labels = ("unary", grpc_service, grpc_method)
            by_code: dict[grpc.StatusCode | None, Any] = {}

            def handled(code: grpc.StatusCode | None) -> Any:
                child = by_code.get(code)
                if child is None:
                    child = by_code[code] = metrics.server_handled.labels(*labels, metrics.go_code(code))
                return child

            children = (metrics.server_started.labels(*labels), metrics.server_msg_received.labels(*labels),
                        metrics.server_msg_sent.labels(*labels), metrics.server_handling.labels(*labels),
                        handled)
            self._metric_children[key] = children
        return children

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        # The server's handlers never change: wrap each method's once, not on every RPC.
        cached = self._handlers.get(details.method)
        if cached is not None:
            return cached
        handler = await continuation(details)
        if handler is not None:
            handler = self._handlers[details.method] = self._wrap(handler, details)
        return handler

    def _wrap(self, handler: grpc.RpcMethodHandler, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        if handler.unary_unary is None:
            return handler
        grpc_service, grpc_method = metrics.split_method(details.method)
        if grpc_service in PUBLIC_SERVICES:
            return handler
        inner = handler.unary_unary
        policy = self.policies.get(grpc_service)
        started_total, received_total, sent_total, handling, handled = self._children(grpc_service, grpc_method)

        async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started = time.perf_counter()
            started_total.inc()
            received_total.inc()
            md = {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
            rid = md.get("x-request-id") or getattr(request, "request_id", "") or uuid.uuid4().hex
            rid_token = request_id_var.set(rid[:MAX_REQUEST_ID_LEN])
            method_token = rpc_method_var.set(grpc_method)
            remaining = context.time_remaining()
            deadline_token = deadline_var.set(None if remaining is None else time.monotonic() + remaining)
            caller_token = None
            code = grpc.StatusCode.OK
            try:
                if remaining is not None and remaining <= 0:
                    code = grpc.StatusCode.DEADLINE_EXCEEDED
                    await context.abort(code, "deadline expired before the request was handled")
                caller = self.authenticator.verify(md.get("authorization"))
                caller_token = set_current_caller(caller)
                if policy is None:
                    raise DomainError("NO_POLICY", f"no authorisation policy for {grpc_service}")
                policy.check(grpc_method, caller)
                if isinstance(request, _Malformed):
                    raise InvalidArgument("MALFORMED_REQUEST",
                                          f"the request is not a valid {grpc_method} request message "
                                          f"({request.error}), e.g. a string field that is not UTF-8")
                try:
                    response = await inner(request, context)
                except NotImplementedError:
                    # A method the servicer does not override: the generated base class raises this.
                    raise Unimplemented("UNIMPLEMENTED", f"{grpc_method} is not implemented",
                                        method=grpc_method) from None
                sent_total.inc()
                return response
            except DomainError as exc:
                code = getattr(grpc.StatusCode, exc.code)
                log.info("%s refused: %s", grpc_method, exc.message,
                         extra={"grpc_code": exc.code, "reason": exc.reason})
                status = error_status(code, exc.reason, exc.message, self.domain, exc.metadata)
                await context.abort(status.code, status.details, status.trailing_metadata)
            except grpc.aio.AbortError:
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            except Exception as exc:
                status = _infrastructure_status(exc, self.domain)
                if status is None:
                    log.exception("%s failed", grpc_method)
                    status = error_status(grpc.StatusCode.INTERNAL, "INTERNAL",
                                          "internal error; retry with the same request_id", self.domain)
                else:
                    log.warning("%s: %s", grpc_method, type(exc).__name__)
                code = status.code
                await context.abort(status.code, status.details, status.trailing_metadata)
            finally:
                elapsed = time.perf_counter() - started
                handled(code).inc()
                handling.observe(elapsed)
                if caller_token is not None:
                    reset_current_caller(caller_token)
                deadline_var.reset(deadline_token)
                rpc_method_var.reset(method_token)
                request_id_var.reset(rid_token)

        return grpc.unary_unary_rpc_method_handler(
            wrapped,
            request_deserializer=_lenient(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )


class ClientInterceptor(grpc.aio.UnaryUnaryClientInterceptor):
    """Adds the caller's token and the request id, bounds the deadline, records grpc_client_*."""

    def __init__(self, token_source: Callable[[], str], default_timeout: float) -> None:
        self.token_source = token_source
        self.default_timeout = default_timeout

    async def intercept_unary_unary(self, continuation: Callable[[Any, Any], Any], client_call_details: Any,
                                    request: Any) -> Any:
        grpc_service, grpc_method = metrics.split_method(
            client_call_details.method.decode() if isinstance(client_call_details.method, bytes)
            else client_call_details.method
        )
        labels = ("unary", grpc_service, grpc_method)
        md = list(client_call_details.metadata or [])
        md.append(("authorization", f"Bearer {self.token_source()}"))
        if rid := request_id_var.get():
            md.append(("x-request-id", rid))
        timeout = client_call_details.timeout or self.default_timeout
        if (deadline := deadline_var.get()) is not None:
            timeout = max(0.0, min(timeout, deadline - time.monotonic()))
        details = grpc.aio.ClientCallDetails(
            method=client_call_details.method, timeout=timeout, metadata=grpc.aio.Metadata(*md),
            credentials=client_call_details.credentials, wait_for_ready=client_call_details.wait_for_ready,
        )
        metrics.client_started.labels(*labels).inc()
        started = time.perf_counter()
        call = await continuation(details, request)
        try:
            code = await call.code()
        finally:
            metrics.client_handling.labels(*labels).observe(time.perf_counter() - started)
        metrics.client_handled.labels(*labels, metrics.go_code(code)).inc()
        return call

