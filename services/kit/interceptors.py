"""Server and client interceptors: auth, deadlines, request ids, logging, metrics, errors.

This is the one place where domain errors become gRPC statuses with a
`google.rpc.ErrorInfo` detail, and where unexpected failures are logged,
counted and hidden behind a generic INTERNAL (or UNAVAILABLE for a database
that is down) so that no stack trace or secret reaches a caller.
"""

from __future__ import annotations

import contextvars
import logging
import sys
import time
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.protobuf import message as pb_message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from services.kit import metrics
from services.kit.auth import (
    PUBLIC_SERVICES,
    CallerAuthenticator,
    Policy,
    reset_current_caller,
    set_current_caller,
)
from services.kit.errors import DomainError, InvalidArgument, Unimplemented
from services.kit.logging import request_id_var, rpc_method_var

log = logging.getLogger("adsmon.rpc")

# Absolute deadline (time.monotonic()) of the RPC being served, for propagation to calls we make.
deadline_var: contextvars.ContextVar[float | None] = contextvars.ContextVar("deadline", default=None)

MAX_REQUEST_ID_LEN = 128


# An error's message and metadata values are clipped: they often quote the caller's input, and the status
# travels in trailing metadata, which clients cap at 8 KiB (a longer one reaches them as RESOURCE_EXHAUSTED).
MAX_ERROR_MESSAGE = 512
MAX_ERROR_METADATA_VALUE = 256


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def error_status(code: grpc.StatusCode, reason: str, message: str, domain: str,
                 metadata: Mapping[str, str] | None = None) -> grpc.Status:
    """A grpc.Status carrying google.rpc.Status with one ErrorInfo detail (message and metadata clipped)."""
    detail = any_pb2.Any()
    clipped = {k: _clip(v, MAX_ERROR_METADATA_VALUE) for k, v in (metadata or {}).items()}
    message = _clip(message, MAX_ERROR_MESSAGE)
    detail.Pack(error_details_pb2.ErrorInfo(reason=reason, domain=domain, metadata=clipped))
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


DEFAULT_MAX_STRING_LENGTH = 4096
DEFAULT_MAX_CONCURRENT_RPCS = 256

# A message type's string-field plan: (field name, repeated?, None for a string or the sub-message's plan).
_Plan = tuple[tuple[str, bool, "_Plan | None"], ...]
_plans: dict[str, _Plan] = {}


def _plan(descriptor: Any) -> _Plan:
    """The fields of `descriptor` that are strings or messages that (transitively) hold strings; cached."""
    plan = _plans.get(descriptor.full_name)
    if plan is None:
        _plans[descriptor.full_name] = ()  # a recursive message type: stop at the cycle
        entries: list[tuple[str, bool, _Plan | None]] = []
        for field in descriptor.fields:
            repeated = bool(field.is_repeated)
            if field.type == field.TYPE_STRING:
                entries.append((field.name, repeated, None))
            elif field.type == field.TYPE_MESSAGE and not field.message_type.GetOptions().map_entry:
                sub = _plan(field.message_type)
                if sub:
                    entries.append((field.name, repeated, sub))
        plan = _plans[descriptor.full_name] = tuple(entries)
    return plan


def invalid_string_field(message: Any, limit: int, plan: _Plan | None = None,
                         prefix: str = "") -> tuple[str, str] | None:
    """The path of the first string field in `message` that is longer than `limit` characters or holds a NUL
    character (PostgreSQL text cannot store one), with the reason: FIELD_TOO_LONG or FIELD_CONTAINS_NUL."""
    for name, repeated, sub in _plan(message.DESCRIPTOR) if plan is None else plan:
        value = getattr(message, name)
        if sub is None:
            for item in value if repeated else (value,):
                if len(item) > limit:
                    return prefix + name, "FIELD_TOO_LONG"
                if "\x00" in item:
                    return prefix + name, "FIELD_CONTAINS_NUL"
        elif repeated:
            for item in value:
                if (found := invalid_string_field(item, limit, sub, f"{prefix}{name}.")) is not None:
                    return found
        elif message.HasField(name) and (found := invalid_string_field(value, limit, sub, f"{prefix}{name}.")):
            return found
    return None


class ServerInterceptor(grpc.aio.ServerInterceptor):
    """Wraps every unary-unary handler of the server.

    Beyond auth and status mapping it sheds load (more than `max_concurrent_rpcs` in flight:
    RESOURCE_EXHAUSTED OVERLOADED at once, counted in grpc_server_shed_total; 0 = no limit) and refuses
    any request string field longer than `max_string_length` characters (INVALID_ARGUMENT FIELD_TOO_LONG).
    Health and reflection are exempt from both.
    """

    def __init__(self, service: str, authenticator: CallerAuthenticator, policies: Mapping[str, Policy], *,
                 max_string_length: int = DEFAULT_MAX_STRING_LENGTH,
                 max_concurrent_rpcs: int = DEFAULT_MAX_CONCURRENT_RPCS) -> None:
        self.domain = f"{service}.adsmon"
        self.authenticator = authenticator
        self.policies = policies
        self.max_string_length = max_string_length
        self.max_concurrent_rpcs = max_concurrent_rpcs
        self.in_flight = 0
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
        shed_total = metrics.server_shed.labels(grpc_service, grpc_method)
        limit, max_length = self.max_concurrent_rpcs, self.max_string_length

        async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started = time.perf_counter()
            started_total.inc()
            received_total.inc()
            if limit and self.in_flight >= limit:
                # Shed at once (no queueing until the caller's deadline): one cheap status, no auth work.
                shed_total.inc()
                handled(grpc.StatusCode.RESOURCE_EXHAUSTED).inc()
                handling.observe(time.perf_counter() - started)
                status = error_status(grpc.StatusCode.RESOURCE_EXHAUSTED, "OVERLOADED",
                                      f"{self.domain} has {limit} requests in flight; retry with backoff",
                                      self.domain, {"limit": str(limit)})
                await context.abort(status.code, status.details, status.trailing_metadata)
            self.in_flight += 1
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
                caller = self.authenticator.authenticate(md, context)
                caller_token = set_current_caller(caller)
                if policy is None:
                    raise DomainError("NO_POLICY", f"no authorisation policy for {grpc_service}")
                policy.check(grpc_method, caller)
                if isinstance(request, _Malformed):
                    raise InvalidArgument("MALFORMED_REQUEST",
                                          f"the request is not a valid {grpc_method} request message "
                                          f"({request.error}), e.g. a string field that is not UTF-8")
                if (isinstance(request, pb_message.Message)
                        and (found := invalid_string_field(request, max_length or sys.maxsize)) is not None):
                    field, reason = found
                    if reason == "FIELD_TOO_LONG":
                        raise InvalidArgument(reason, f"{field} is longer than {max_length} characters",
                                              field=field, max_length=max_length)
                    raise InvalidArgument(reason, f"{field} contains a NUL character", field=field)
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
                self.in_flight -= 1
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


def header_safe(value: str) -> str:
    """`value` as a legal gRPC metadata value (printable ASCII): percent-encoded when it is not, so that a
    caller's request_id with a newline or non-ASCII characters still correlates instead of failing the call."""
    if value.isascii() and value.isprintable():
        return value
    return urllib.parse.quote(value, safe="")


def outgoing_call(details: Any, token_source: Callable[[], str] | None, default_timeout: float
                  ) -> tuple[tuple[str, str, str], list[tuple[str, str]], float]:
    """What every outgoing call carries: its metric labels, metadata with the caller's token (none under mutual
    TLS: `token_source` None) and the request id, and a timeout bounded by the deadline of the RPC being served."""
    method = details.method.decode() if isinstance(details.method, bytes) else details.method
    grpc_service, grpc_method = metrics.split_method(method)
    md = list(details.metadata or [])
    if token_source is not None:
        md.append(("authorization", f"Bearer {token_source()}"))
    if rid := request_id_var.get():
        md.append(("x-request-id", header_safe(rid)))
    timeout = details.timeout or default_timeout
    if (deadline := deadline_var.get()) is not None:
        timeout = max(0.0, min(timeout, deadline - time.monotonic()))
    return ("unary", grpc_service, grpc_method), md, timeout


class ClientInterceptor(grpc.aio.UnaryUnaryClientInterceptor):
    """Adds the caller's token and the request id, bounds the deadline, records grpc_client_*."""

    def __init__(self, token_source: Callable[[], str] | None, default_timeout: float) -> None:
        self.token_source = token_source
        self.default_timeout = default_timeout

    async def intercept_unary_unary(self, continuation: Callable[[Any, Any], Any], client_call_details: Any,
                                    request: Any) -> Any:
        labels, md, timeout = outgoing_call(client_call_details, self.token_source, self.default_timeout)
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

