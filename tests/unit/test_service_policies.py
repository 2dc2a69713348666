"""Every service's authorisation policy, method by method, through a real kit server.

Each service's registration is served with its real POLICY behind the kit's interceptors and the generated
base servicer (every method unimplemented), so what answers is the interceptor alone: an allowed caller gets
past it (never PERMISSION_DENIED), any other gets PERMISSION_DENIED CALLER_NOT_ALLOWED naming
the method. Every service's table is written out here from its proto; the production policies name only
real callers (no `tests` identity: tests authenticate as marketplace, operator, billing or ads). This module
runs the table on plaintext (bearer tokens); tests/unit/kit/test_mtls.py runs the same table over mutual TLS.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import pytest_asyncio
from adsmon.ads.v1 import ads_pb2, ads_pb2_grpc
from adsmon.billing.v1 import billing_pb2, billing_pb2_grpc
from adsmon.connects.v1 import connects_pb2, connects_pb2_grpc
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message_factory import GetMessageClass

from services.ads.bootstrap import POLICY as ADS_POLICY
from services.billing.bootstrap import POLICY as BILLING_POLICY
from services.connects.entrypoints.grpc_servicer import POLICY as CONNECTS_POLICY
from services.connects.service_layer.handlers import RETURN_CALLERS
from services.kit.auth import Policy
from services.kit.clients import channel
from services.kit.config import ServiceConfig
from services.kit.server import App, Server, ServiceRegistration
from tests.conftest import error_info

SECRET = b"p" * 48
CALLERS = ("billing", "ads", "marketplace", "operator", "tests", "connects", "stranger")
REAL_CALLERS = {"billing", "ads", "marketplace", "operator"}
CONNECTS = connects_pb2.DESCRIPTOR.services_by_name["ConnectsService"]
ADS = ads_pb2.DESCRIPTOR.services_by_name["AdsService"]
BILLING = billing_pb2.DESCRIPTOR.services_by_name["BillingService"]
SERVICES: dict[str, tuple[ServiceDescriptor, Policy, Any, Any]] = {
    "connects": (CONNECTS, CONNECTS_POLICY, connects_pb2_grpc.add_ConnectsServiceServicer_to_server,
                 connects_pb2_grpc.ConnectsServiceServicer),
    "ads": (ADS, ADS_POLICY, ads_pb2_grpc.add_AdsServiceServicer_to_server, ads_pb2_grpc.AdsServiceServicer),
    "billing": (BILLING, BILLING_POLICY, billing_pb2_grpc.add_BillingServiceServicer_to_server,
                billing_pb2_grpc.BillingServiceServicer),
}

# Who may call each ConnectsService method, as connects.proto documents it. Finer rules (PURCHASE credits,
# ad products) are the service layer's and tested there.
ANY_SERVICE = {"billing", "ads", "marketplace", "operator"}
OPERATOR = {"operator"}
CONNECTS_CALLERS = {
    "GetBalance": ANY_SERVICE, "Spend": ANY_SERVICE, "Hold": ANY_SERVICE, "CaptureHold": ANY_SERVICE,
    "ReleaseHold": ANY_SERVICE, "IncreaseHold": ANY_SERVICE, "ListTransactions": ANY_SERVICE,
    "Credit": {"billing", "marketplace", "operator"},
    "ReturnConnects": {"marketplace", "operator"},
    "GetLedgerTotals": {"billing", "operator"},
    "ReverseCredit": {"billing"},  # a chargeback claw-back (billing only, as the proto documents)
}
# The marketplace acts for its users; a manual close (AUCTION_CLOSE_REASON_MANUAL) is an operator's.
MARKETPLACE = {"marketplace", "operator"}
ADS_CALLERS = {m.name: MARKETPLACE for m in ADS.methods} | {"CloseAuction": OPERATOR}
# Chargebacks reported by hand and the books (revenue report, reconciliation) are operators' only.
BILLING_CALLERS = {m.name: MARKETPLACE for m in BILLING.methods} | {
    "RecordChargeback": OPERATOR, "GetRevenueReport": OPERATOR, "Reconcile": OPERATOR}
TABLES = {"connects": CONNECTS_CALLERS, "ads": ADS_CALLERS, "billing": BILLING_CALLERS}


@pytest.mark.parametrize("name", list(SERVICES))
def test_each_policy_is_the_documented_table_for_every_method(name):
    descriptor, policy, _, _ = SERVICES[name]
    table = TABLES[name]
    assert policy.service == descriptor.full_name
    assert set(table) == {m.name for m in descriptor.methods}, "a method without a documented rule"
    assert set(policy.methods) <= set(table), "a rule for a method the proto lacks"
    got = {m: {c for c in CALLERS if c in policy.methods.get(m, policy.default)} for m in table}
    assert got == table


@pytest.mark.parametrize("name", list(SERVICES))
def test_no_production_policy_names_a_test_identity(name):
    policy = SERVICES[name][1]
    for allowed in (policy.default, *policy.methods.values()):
        assert allowed <= REAL_CALLERS, allowed - REAL_CALLERS


def test_returns_in_the_service_layer_are_not_for_test_identities():
    assert frozenset({"marketplace", "operator"}) == RETURN_CALLERS


def expected_callers(name: str, method: str) -> set[str]:
    return TABLES[name][method]


def check_answer(exc: grpc.aio.AioRpcError, *, caller: str, method: str, allowed: set[str]) -> None:
    """An allowed caller got past the interceptor (the base servicer answers); any other is refused naming it."""
    if caller in allowed:
        # Past the interceptor, the base servicer answers (UNIMPLEMENTED once the kit maps it; INTERNAL before).
        assert exc.code() not in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED), (
            caller, exc.code(), exc.details())
    else:
        assert exc.code() == grpc.StatusCode.PERMISSION_DENIED, (caller, exc.code())
        info = error_info(exc)
        assert (info.reason, info.metadata["method"], info.metadata["caller"]) == (
            "CALLER_NOT_ALLOWED", method, caller)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def ports() -> AsyncIterator[dict[str, int]]:
    servers, ports = [], {}
    for name, (descriptor, policy, add, base_servicer) in SERVICES.items():
        config = ServiceConfig.from_env(name, grpc_port=0, metrics_port=0, environ={
            "ADSMON_TRANSPORT": "plaintext",
            "ADSMON_AUTH_SECRET": SECRET.decode(), f"ADSMON_{name.upper()}_DATABASE_URL": "sqlite://"})
        app = App(config, [ServiceRegistration(descriptor.full_name, add, base_servicer(), policy)],
                  drain_delay_seconds=0.0)
        server = Server(app)
        await server.start()
        servers.append(server)
        ports[name] = app.grpc_port
    yield ports
    for server in servers:
        await server.stop()


CASES = [(name, m.name) for name, (d, *_) in SERVICES.items() for m in d.methods]


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(("name", "method"), CASES, ids=[f"{n}.{m}" for n, m in CASES])
async def test_each_method_lets_its_callers_through_and_denies_every_other(ports, name, method):
    descriptor = SERVICES[name][0]
    request_type = GetMessageClass(descriptor.methods_by_name[method].input_type)
    allowed = expected_callers(name, method)
    for caller in CALLERS:
        async with channel(f"127.0.0.1:{ports[name]}", secret=SECRET, caller=caller) as ch:
            call = ch.unary_unary(f"/{descriptor.full_name}/{method}",
                                  request_serializer=lambda m: m.SerializeToString(), response_deserializer=None)
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                await call(request_type(), timeout=5)
        check_answer(exc.value, caller=caller, method=method, allowed=allowed)
