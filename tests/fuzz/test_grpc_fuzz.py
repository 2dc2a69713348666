"""Hostile requests to every method of every service over real gRPC (issue #11, "Hostile input").

For each method of ConnectsService, AdsService (auctions, badge, promoted) and BillingService (money in and
the books), hypothesis draws requests from the method's request descriptor (tests/fuzz/strategies.py) and
sends them as a caller the method's policy allows; then raw garbage bytes as the request body. Every
answer must be OK or a refusal carrying an ErrorInfo, never INTERNAL, UNKNOWN, UNAVAILABLE or a blown
deadline; a refused request must leave the service's database (and connects', which ads and billing call)
as it was; the server must still answer afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from adsmon.ads.v1 import ads_pb2
from adsmon.billing.v1 import billing_pb2
from adsmon.connects.v1 import connects_pb2
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from services.ads.bootstrap import POLICY as ADS_POLICY
from services.billing.bootstrap import POLICY as BILLING_POLICY
from services.connects.entrypoints.grpc_servicer import POLICY as CONNECTS_POLICY
from services.kit.auth import Policy
from services.kit.clients import sync_channel
from tests.fuzz.conftest import EXAMPLES, SEED, TALLY, Fuzzed
from tests.fuzz.strategies import SeenValues, request_strategy

pytestmark = pytest.mark.e2e

SERVICES: dict[str, tuple[ServiceDescriptor, Policy]] = {
    "connects": (connects_pb2.DESCRIPTOR.services_by_name["ConnectsService"], CONNECTS_POLICY),
    "ads": (ads_pb2.DESCRIPTOR.services_by_name["AdsService"], ADS_POLICY),
    "billing": (billing_pb2.DESCRIPTOR.services_by_name["BillingService"], BILLING_POLICY),
}
METHODS = [(name, m.name) for name, (svc, _) in SERVICES.items() for m in svc.methods]
# Answers that mean the server failed, not that the request was refused.
FAILURES = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.DATA_LOSS}
CALL_TIMEOUT = 15.0
# Refusals that are recorded by design, as the answer of a step persisted before calling another party:
# StartBadge keeps its badge (off) and the refused first charge; PlaceBid keeps the auction its bid opened
# (the job's auction exists either way); a declined purchase is billing's record of the provider's answer.
# Each says so in its events (outbox). Connects itself must still be unchanged.
RECORDED_REFUSALS = {
    ("AdsService/StartBadge", "INSUFFICIENT_CONNECTS"): {"ads_badges", "ads_badge_charges", "outbox"},
    ("AdsService/PlaceBid", "INSUFFICIENT_CONNECTS"): {"ads_auctions", "outbox"},
    ("BillingService/PurchaseConnects", "PAYMENT_DECLINED"): {"purchases", "outbox"},
    ("BillingService/StartMembership", "PAYMENT_DECLINED"): {"memberships", "membership_cycles",
                                                             "membership_requests", "outbox"},
}
SEEN: dict[str, SeenValues] = {name: SeenValues() for name in SERVICES}


def allowed_caller(policy: Policy, method: str) -> str:
    """A caller the method's policy lets in (the operator where allowed, else the first by name)."""
    allowed = policy.methods.get(method, policy.default)
    return "operator" if "operator" in allowed else sorted(allowed)[0]


@pytest.fixture(scope="module")
def channels(fuzz_suite: dict[str, Fuzzed], auth_secret: bytes) -> Iterator[dict[tuple[str, str], grpc.Channel]]:
    opened: dict[tuple[str, str], grpc.Channel] = {}
    for name, method in METHODS:
        caller = allowed_caller(SERVICES[name][1], method)
        if (name, caller) not in opened:
            opened[(name, caller)] = sync_channel(fuzz_suite[name].process.target, secret=auth_secret,
                                                  caller=caller, default_timeout=CALL_TIMEOUT)
    yield opened
    for ch in opened.values():
        ch.close()


def _describe(request: Any) -> str:
    text = repr(request) if isinstance(request, bytes) else str(request)
    return text if len(text) < 600 else text[:600] + "..."


class MethodUnderFuzz:
    """One RPC: its descriptor, a callable taking a message or raw bytes, and the checks of each answer."""

    def __init__(self, name: str, method: MethodDescriptor, target: Fuzzed, ch: grpc.Channel) -> None:
        self.name, self.method, self.target = name, method, target
        self.path = f"/{method.containing_service.full_name}/{method.name}"
        self.label = f"{method.containing_service.name}/{method.name}"
        self.request_class = GetMessageClass(method.input_type)
        self.response_class = GetMessageClass(method.output_type)
        self.requests = request_strategy(self.request_class, SEEN[name])
        self.call: Callable[..., Any] = ch.unary_unary(
            self.path, request_serializer=lambda m: m if isinstance(m, bytes) else m.SerializeToString(),
            response_deserializer=self.response_class.FromString)

    def send(self, request: Message | bytes) -> None:
        before = self.target.state()
        try:
            response = self.call(request, timeout=CALL_TIMEOUT)
        except grpc.RpcError as exc:
            code = exc.code()
            TALLY.record(self.label, code)
            where = f"{self.label} answered {code.name} ({exc.details()}) to {_describe(request)}"
            if code in FAILURES:
                TALLY.bad.append(where)
                raise AssertionError(where) from None
            status = rpc_status.from_call(exc)
            info = error_details_pb2.ErrorInfo()
            assert status is not None and status.details and status.details[0].Unpack(info) and info.reason, \
                f"refusal without an ErrorInfo reason: {where}"
            where = f"{where} [{info.reason}]"
            if code == grpc.StatusCode.INVALID_ARGUMENT and "field" not in info.metadata \
                    and info.reason != "MALFORMED_REQUEST":
                TALLY.without_field[f"{self.label} {info.reason}"] += 1
            after = self.target.state()
            allowed = RECORDED_REFUSALS.get((self.label, info.reason), set())
            changed = [t for i, (snap_b, snap_a) in enumerate(zip(before, after, strict=True)) for t in snap_b
                       if snap_b[t] != snap_a.get(t) and not (i == 0 and t in allowed)]
            assert not changed, f"refused request changed tables {changed}: {where}"
            return
        TALLY.record(self.label, grpc.StatusCode.OK)
        seen = SEEN[self.name]
        if isinstance(request, Message):
            seen.learn(request)
        seen.learn(response)

    def still_serving(self) -> None:
        process = self.target.process
        assert process.proc is not None and process.proc.poll() is None, f"{process.name} exited:\n" \
            + process.log_tail()
        assert process.serving(), f"{process.name} no longer SERVING after fuzzing {self.label}"


def _fuzz_settings() -> settings:
    return settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=False,
                    suppress_health_check=list(HealthCheck), phases=(Phase.generate, Phase.shrink),
                    report_multiple_bugs=False)


@pytest.fixture
def under_fuzz(request: pytest.FixtureRequest, fuzz_suite: dict[str, Fuzzed],
               channels: dict[tuple[str, str], grpc.Channel]) -> MethodUnderFuzz:
    name, method_name = request.param
    descriptor, policy = SERVICES[name]
    ch = channels[(name, allowed_caller(policy, method_name))]
    return MethodUnderFuzz(name, descriptor.methods_by_name[method_name], fuzz_suite[name], ch)


@pytest.mark.parametrize("under_fuzz", METHODS, ids=[f"{n}.{m}" for n, m in METHODS], indirect=True)
def test_random_and_boundary_requests_never_fail_the_server_nor_change_state_when_refused(
        under_fuzz: MethodUnderFuzz) -> None:
    @seed(SEED)
    @_fuzz_settings()
    @given(data=st.data())
    def fuzz(data: st.DataObject) -> None:
        under_fuzz.send(data.draw(under_fuzz.requests))

    fuzz()
    under_fuzz.still_serving()


@pytest.mark.parametrize("under_fuzz", METHODS, ids=[f"{n}.{m}" for n, m in METHODS], indirect=True)
def test_garbage_bytes_as_a_request_body_are_refused_or_parsed_never_a_failure(
        under_fuzz: MethodUnderFuzz) -> None:
    boundary = [b"\xff", b"\x0a\x02\xc3\x28", b"\x08" + b"\xff" * 10, b"\x0a\xff\xff\xff\xff\x0f",
                b"\x12\x05abc", b"\x00" * 32]

    @seed(SEED)
    @_fuzz_settings()
    @given(body=st.one_of(st.sampled_from(boundary), st.binary(min_size=1, max_size=256)))
    def fuzz(body: bytes) -> None:
        under_fuzz.send(body)

    fuzz()
    under_fuzz.still_serving()
