"""The kit's server: auth, policy, error mapping with ErrorInfo, metrics, health, shutdown."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from prometheus_client import REGISTRY

from services.kit.auth import Policy, mint_token
from services.kit.clients import channel
from services.kit.config import ServiceConfig
from services.kit.errors import FailedPrecondition
from services.kit.interceptors import deadline_var
from services.kit.server import App, Server, ServiceRegistration

SECRET = b"s" * 48
SERVICE = "test.v1.Echo"


class EchoServicer:
    async def Echo(self, request: bytes, context) -> bytes:
        return request

    async def Refuse(self, request: bytes, context) -> bytes:
        raise FailedPrecondition("INSUFFICIENT_CONNECTS", "not enough Connects", needed="5")

    async def Crash(self, request: bytes, context) -> bytes:
        raise RuntimeError("password=hunter2 leaked in an exception")

    async def Unbuilt(self, request: bytes, context) -> bytes:
        # What a generated servicer base class does for a method nobody implemented.
        context.set_code(grpc.StatusCode.UNIMPLEMENTED)
        context.set_details("Method not implemented!")
        raise NotImplementedError("Method not implemented!")

    async def Typed(self, request: health_pb2.HealthCheckRequest, context) -> bytes:
        return request.service.encode()

    async def Remaining(self, request: bytes, context) -> bytes:
        deadline = deadline_var.get()
        return b"none" if deadline is None else b"set"


def add_echo(servicer: EchoServicer, server: grpc.aio.Server) -> None:
    handlers = {
        name: grpc.unary_unary_rpc_method_handler(getattr(servicer, name))
        for name in ("Echo", "Refuse", "Crash", "Remaining", "Unbuilt")
    }
    handlers["Typed"] = grpc.unary_unary_rpc_method_handler(
        servicer.Typed, request_deserializer=health_pb2.HealthCheckRequest.FromString)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))


def config(**overrides) -> ServiceConfig:
    base = dict(service="test", grpc_host="127.0.0.1", grpc_port=0, metrics_host="127.0.0.1",
                metrics_port=0, database_url="sqlite://", kafka_bootstrap="127.0.0.1:1",
                auth_secret=SECRET, log_level="INFO", log_json=True,
                shutdown_grace_seconds=1.0, db_pool_size=1)
    base.update(overrides)
    return ServiceConfig(**base)


@pytest.fixture
async def server():
    policy = Policy.build(SERVICE, default={"tests", "billing"}, methods={"Echo": {"tests"}})
    app = App(config(), [ServiceRegistration(SERVICE, add_echo, EchoServicer(), policy)],
              drain_delay_seconds=0.0)
    srv = Server(app)
    await srv.start()
    yield srv
    await srv.stop()


async def call(port: int, method: str, payload: bytes = b"hi", *, token: str | None = None,
               timeout: float = 5.0) -> bytes:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        md = (("authorization", f"Bearer {token}"),) if token else ()
        return await ch.unary_unary(f"/{SERVICE}/{method}")(payload, metadata=md, timeout=timeout)


def error_info(exc: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    status = rpc_status.from_call(exc)
    assert status is not None, "no google.rpc.Status in the trailers"
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    return info


async def test_authenticated_allowed_caller_is_served(server):
    port = server.app.grpc_port
    assert await call(port, "Echo", b"ping", token=mint_token(SECRET, "tests")) == b"ping"


@pytest.mark.parametrize("token", [None, "garbage", mint_token(b"x" * 48, "tests"),
                                   mint_token(SECRET, "tests", ttl_seconds=-10)],
                         ids=["missing", "garbage", "forged", "expired"])
async def test_missing_forged_or_expired_token_is_unauthenticated(server, token):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call(server.app.grpc_port, "Echo", token=token)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_info(err.value).reason in {"MISSING_CREDENTIALS", "BAD_CREDENTIALS", "TOKEN_EXPIRED"}


async def test_caller_outside_the_method_policy_is_denied(server):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call(server.app.grpc_port, "Echo", token=mint_token(SECRET, "billing"))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    info = error_info(err.value)
    assert info.reason == "CALLER_NOT_ALLOWED"
    assert info.domain == "test.adsmon"


async def test_domain_error_becomes_status_with_error_info(server):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call(server.app.grpc_port, "Refuse", token=mint_token(SECRET, "tests"))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert err.value.details() == "not enough Connects"
    info = error_info(err.value)
    assert info.reason == "INSUFFICIENT_CONNECTS"
    assert dict(info.metadata) == {"needed": "5"}


async def test_unexpected_exception_is_internal_without_leaking_its_text(server):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call(server.app.grpc_port, "Crash", token=mint_token(SECRET, "tests"))
    assert err.value.code() == grpc.StatusCode.INTERNAL
    assert "hunter2" not in err.value.details()
    assert error_info(err.value).reason == "INTERNAL"


async def test_a_method_not_implemented_yet_is_unimplemented_not_internal(server):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call(server.app.grpc_port, "Unbuilt", token=mint_token(SECRET, "tests"))
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert error_info(err.value).reason == "UNIMPLEMENTED"
    assert "Unbuilt" in err.value.details()


async def test_handled_counter_uses_go_grpc_prometheus_labels(server):
    labels = {"grpc_type": "unary", "grpc_service": SERVICE, "grpc_method": "Refuse",
              "grpc_code": "FailedPrecondition"}
    before = REGISTRY.get_sample_value("grpc_server_handled_total", labels) or 0.0
    with pytest.raises(grpc.aio.AioRpcError):
        await call(server.app.grpc_port, "Refuse", token=mint_token(SECRET, "tests"))
    assert REGISTRY.get_sample_value("grpc_server_handled_total", labels) == before + 1
    count = REGISTRY.get_sample_value(
        "grpc_server_handling_seconds_count",
        {"grpc_type": "unary", "grpc_service": SERVICE, "grpc_method": "Refuse"})
    assert count and count >= 1


async def test_deadline_of_the_call_is_visible_for_propagation(server):
    token = mint_token(SECRET, "tests")
    assert await call(server.app.grpc_port, "Remaining", token=token, timeout=5) == b"set"


async def test_client_channel_authenticates_and_bounds_timeout(server):
    async with channel(f"127.0.0.1:{server.app.grpc_port}", secret=SECRET, caller="tests") as ch:
        assert await ch.unary_unary(f"/{SERVICE}/Echo")(b"x") == b"x"
        labels = {"grpc_type": "unary", "grpc_service": SERVICE, "grpc_method": "Echo", "grpc_code": "OK"}
        assert (REGISTRY.get_sample_value("grpc_client_handled_total", labels) or 0) >= 1


async def test_health_serves_then_goes_not_serving_on_shutdown():
    policy = Policy.build(SERVICE, default={"tests"})
    srv = Server(App(config(), [ServiceRegistration(SERVICE, add_echo, EchoServicer(), policy)],
                     drain_delay_seconds=0.3))
    await srv.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{srv.app.grpc_port}") as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=SERVICE))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        stopping = asyncio.create_task(srv.stop())
        await asyncio.sleep(0.1)  # inside the drain delay: still answering, but NOT_SERVING
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=SERVICE))
        assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
        await stopping


async def test_a_request_that_does_not_parse_is_invalid_argument_not_internal(server):
    token = mint_token(SECRET, "tests")
    assert await call(server.app.grpc_port, "Typed", b"\x0a\x02ok", token=token) == b"ok"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        # Field 1 (a string) holding bytes that are not UTF-8.
        await call(server.app.grpc_port, "Typed", b"\x0a\x02\xff\xfe", token=token)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(err.value).reason == "MALFORMED_REQUEST"


async def test_a_malformed_request_from_an_unknown_caller_is_still_unauthenticated(server):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call(server.app.grpc_port, "Typed", b"\x0a\x02\xff\xfe")
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_method_the_servicer_does_not_implement_is_unimplemented_not_internal():
    from adsmon.billing.v1 import billing_pb2, billing_pb2_grpc

    name = billing_pb2.DESCRIPTOR.services_by_name["BillingService"].full_name

    class OnlyTheBase(billing_pb2_grpc.BillingServiceServicer):
        pass  # every method is the generated base's: it raises NotImplementedError

    app = App(config(), [ServiceRegistration(name, billing_pb2_grpc.add_BillingServiceServicer_to_server,
                                             OnlyTheBase(), Policy.build(name, default={"tests"}))],
              drain_delay_seconds=0.0)
    srv = Server(app)
    await srv.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as ch:
            stub = billing_pb2_grpc.BillingServiceStub(ch)
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                await stub.Reconcile(billing_pb2.ReconcileRequest(), timeout=5,
                                     metadata=(("authorization", f"Bearer {mint_token(SECRET, 'tests')}"),))
    finally:
        await srv.stop()
    assert exc.value.code() == grpc.StatusCode.UNIMPLEMENTED
    info = error_info(exc.value)
    assert (info.reason, info.metadata["method"]) == ("UNIMPLEMENTED", "Reconcile")
    assert REGISTRY.get_sample_value("grpc_server_handled_total", {
        "grpc_type": "unary", "grpc_service": name, "grpc_method": "Reconcile", "grpc_code": "Unimplemented"}) >= 1
