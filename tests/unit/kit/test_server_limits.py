"""The kit server's input limits and overload shedding, through a real gRPC server."""

from __future__ import annotations

import asyncio
import time
import timeit
import uuid

import grpc
import pytest
from adsmon.connects.v1 import connects_pb2
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from services.kit.auth import Policy, mint_token
from services.kit.interceptors import invalid_string_field
from services.kit.server import App, Server, ServiceRegistration
from tests.unit.kit.test_server_interceptors import SECRET, config, error_info

SERVICE = "test.v1.Limits"


class LimitsServicer:
    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def Slow(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        await asyncio.wait_for(self.release.wait(), 5)
        return b"done"

    async def Spend(self, request: connects_pb2.SpendRequest, context: grpc.aio.ServicerContext) -> bytes:
        return request.account_id.encode()


def add_limits(servicer: LimitsServicer, server: grpc.aio.Server) -> None:
    handlers = {
        "Slow": grpc.unary_unary_rpc_method_handler(servicer.Slow),
        "Spend": grpc.unary_unary_rpc_method_handler(
            servicer.Spend, request_deserializer=connects_pb2.SpendRequest.FromString),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))


async def start(**overrides: int) -> tuple[Server, LimitsServicer]:
    servicer = LimitsServicer()
    policy = Policy.build(SERVICE, default={"tests"})
    srv = Server(App(config(**overrides), [ServiceRegistration(SERVICE, add_limits, servicer, policy)],
                     drain_delay_seconds=0.0))
    await srv.start()
    return srv, servicer


def shed_count(method: str) -> float:
    return REGISTRY.get_sample_value("grpc_server_shed_total",
                                     {"grpc_service": SERVICE, "grpc_method": method}) or 0.0


async def test_excess_concurrent_calls_are_shed_at_once_with_resource_exhausted_overloaded():
    srv, servicer = await start(max_concurrent_rpcs=2)
    before = shed_count("Slow")
    md = (("authorization", f"Bearer {mint_token(SECRET, 'tests')}"),)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{srv.app.grpc_port}") as ch:
            slow = ch.unary_unary(f"/{SERVICE}/Slow")

            async def timed() -> tuple[float, bytes | grpc.aio.AioRpcError]:
                began = time.perf_counter()
                try:
                    result: bytes | grpc.aio.AioRpcError = await slow(b"", metadata=md, timeout=5)
                except grpc.aio.AioRpcError as exc:
                    result = exc
                return time.perf_counter() - began, result

            admitted = [asyncio.create_task(timed()) for _ in range(2)]
            await asyncio.sleep(0.3)  # both are in flight, waiting on the servicer
            shed = await asyncio.gather(*(timed() for _ in range(3)))
            servicer.release.set()
            served = await asyncio.gather(*admitted)
    finally:
        await srv.stop()
    assert [result for _, result in served] == [b"done", b"done"]
    for seconds, result in shed:
        assert isinstance(result, grpc.aio.AioRpcError)
        assert result.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error_info(result).reason == "OVERLOADED"
        assert seconds < 0.1, f"a shed call took {seconds * 1000:.1f} ms"
    assert shed_count("Slow") - before == 3


async def test_health_is_never_shed_even_at_the_limit():
    srv, servicer = await start(max_concurrent_rpcs=1)
    md = (("authorization", f"Bearer {mint_token(SECRET, 'tests')}"),)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{srv.app.grpc_port}") as ch:
            busy = ch.unary_unary(f"/{SERVICE}/Slow")(b"", metadata=md, timeout=5)
            await asyncio.sleep(0.3)
            reply = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=2)
            servicer.release.set()
            await busy
    finally:
        await srv.stop()
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_a_request_string_over_the_maximum_is_invalid_argument_field_too_long():
    srv, _ = await start(max_string_length=64)
    md = (("authorization", f"Bearer {mint_token(SECRET, 'tests')}"),)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{srv.app.grpc_port}") as ch:
            spend = ch.unary_unary(f"/{SERVICE}/Spend", request_serializer=connects_pb2.SpendRequest.SerializeToString)
            ok = await spend(connects_pb2.SpendRequest(request_id=str(uuid.uuid4()), account_id="a" * 64),
                             metadata=md, timeout=5)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await spend(connects_pb2.SpendRequest(request_id=str(uuid.uuid4()), reference="r" * 65),
                            metadata=md, timeout=5)
    finally:
        await srv.stop()
    assert ok == b"a" * 64
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info = error_info(caught.value)
    assert (info.reason, info.metadata["field"], info.metadata["max_length"]) == ("FIELD_TOO_LONG", "reference", "64")


def test_strings_in_nested_and_repeated_messages_are_checked_with_their_path():
    message = descriptor_pb2.FileDescriptorProto(name="ok")
    message.message_type.add(name="M").field.add(name="x" * 20)
    assert invalid_string_field(message, 19) == ("message_type.field.name", "FIELD_TOO_LONG")
    assert invalid_string_field(message, 20) is None


def test_the_string_check_costs_microseconds_on_a_spend_request():
    request = connects_pb2.SpendRequest(request_id=str(uuid.uuid4()), account_id=str(uuid.uuid4()), amount=5,
                                        reference="job-123")
    runs = 20_000
    seconds = timeit.timeit(lambda: invalid_string_field(request, 4096), number=runs) / runs
    print(f"string check on a SpendRequest: {seconds * 1e6:.2f} us")
    assert invalid_string_field(request, 4096) is None
    assert seconds < 50e-6
