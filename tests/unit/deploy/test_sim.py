"""The traffic simulator against fake channels: seeded, classifies answers, survives services not built yet."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from adsmon.ads.v1 import ads_pb2 as apb
from adsmon.billing.v1 import billing_pb2 as bpb
from adsmon.connects.v1 import connects_pb2 as cpb

from deploy.sim.core import ERROR, NOT_BUILT, OK, REFUSED, Sim, progress_line, run
from deploy.sim.flows import all_flows
from services.billing.adapters.sandbox_provider import CARDS
from services.kit.identities import CallerCredentials

SECRET = b"s" * 32


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str = "") -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


class FakeChannel:
    """Enough of grpc.Channel for generated stubs: every unary call goes to `answer(method, request, metadata)`."""

    def __init__(self, answer: Callable[[str, Any, Any], Any]) -> None:
        self.answer = answer

    def unary_unary(self, method: str, *args: object, **kwargs: object) -> Callable[..., Any]:
        return lambda request, metadata=None, timeout=None: self.answer(method, request, metadata)


class FakeLedger:
    """connects in memory: credits add, spends refuse INSUFFICIENT_CONNECTS below zero, replays return the first
    answer; records every call."""

    def __init__(self) -> None:
        self.balances: Counter[str] = Counter()
        self.answers: dict[str, Any] = {}
        self.calls: list[tuple[str, str]] = []

    def __call__(self, method: str, request: Any, metadata: Any) -> Any:
        name = method.rsplit("/", 1)[1]
        self.calls.append((name, str(request)))
        assert dict(metadata)["authorization"].startswith("Bearer adsmon1.")
        if name == "GetBalance":
            return cpb.GetBalanceResponse(account_id=request.account_id, available=self.balances[request.account_id])
        if request.request_id in self.answers:
            return self.answers[request.request_id]
        if name == "Spend" and self.balances[request.account_id] < request.amount:
            raise FakeRpcError(grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_CONNECTS")
        self.balances[request.account_id] += request.amount if name == "Credit" else -request.amount
        reply = getattr(cpb, f"{name}Response")(transaction=cpb.LedgerTransaction(amount=request.amount))
        self.answers[request.request_id] = reply
        return reply


def unimplemented(method: str, request: Any, metadata: Any) -> Any:
    raise FakeRpcError(grpc.StatusCode.UNIMPLEMENTED, "Method not implemented!")


def make_sim(seed: int, ledger: FakeLedger, published: list[tuple[str, str]], *,
             ads: Callable[[str, Any, Any], Any] = unimplemented) -> Sim:
    channels = {"connects": FakeChannel(ledger), "ads": FakeChannel(ads), "billing": FakeChannel(unimplemented)}
    return Sim(seed=seed, namespace="t", credentials=CallerCredentials(secret=SECRET), channels=channels,  # type: ignore[arg-type]
               publish=lambda key, payload: published.append((key, payload.DESCRIPTOR.name)), accounts=20)


def simulate(seed: int, events: int = 400, **kw: Any) -> tuple[Sim, FakeLedger, list[tuple[str, str]]]:
    ledger, published = FakeLedger(), []
    sim = make_sim(seed, ledger, published, **kw)
    steps = iter(range(events))
    run(sim, all_flows(), rate=1e6, duration=None, should_stop=lambda: next(steps, None) is None)
    return sim, ledger, published


def test_the_same_seed_repeats_the_same_calls_and_events_and_another_seed_does_not():
    first, second, other = simulate(7), simulate(7), simulate(8)
    assert first[1].calls == second[1].calls and first[2] == second[2]
    assert first[0].tally == second[0].tally
    assert first[1].calls != other[1].calls


def test_connects_flows_move_connects_and_out_of_funds_proposals_are_refusals_not_errors():
    sim, ledger, published = simulate(3)
    outcomes = sim.tally.outcomes
    assert outcomes["credits", OK] > 0 and outcomes["proposals", OK] > 0
    assert outcomes["proposals", REFUSED] > 0  # some freelancers run out of Connects
    assert sim.tally.total(ERROR) == 0
    credited = sum(1 for name, _ in ledger.calls if name == "Credit")
    assert credited == outcomes["credits", OK]
    spent = sum(a.transaction.amount for rid, a in ledger.answers.items() if "-spend-" in rid)
    credits = sum(a.transaction.amount for rid, a in ledger.answers.items() if "-credit-" in rid)
    assert sim.tally.connects_moved == spent + credits
    kinds = Counter(kind for _, kind in published)
    assert kinds["JobPosted"] > 0 and kinds["JobCancelled"] > 0 and kinds["JobHired"] > 0


def test_some_proposal_spends_are_retried_with_the_same_request_id():
    _, ledger, _ = simulate(5, events=1500)
    spends = [req for name, req in ledger.calls if name == "Spend"]
    assert len(spends) > len(set(spends)), "no retried Spend: the idempotency path is never exercised"


def test_services_not_built_count_as_not_built_and_the_run_goes_on():
    sim, _, _ = simulate(4)
    assert {f for (f, o) in sim.tally.outcomes if o == NOT_BUILT} >= {"boosts", "interactions", "searches",
                                                                        "purchases"}
    assert sim.tally.total(ERROR) == 0
    line = progress_line(sim.tally, 12.0, 30.0)
    assert "not built" in line and "boosts" in line and "errors 0" in line


def test_a_server_error_is_an_error_with_its_message_on_the_progress_line():
    def broken(method: str, request: Any, metadata: Any) -> Any:
        raise FakeRpcError(grpc.StatusCode.INTERNAL, "boom")

    sim, _, _ = simulate(4, ads=broken)
    assert sim.tally.total(ERROR) > 0
    assert "last error: ads." in progress_line(sim.tally, 1.0, 1.0) and "INTERNAL boom" in sim.tally.last_error


def test_a_kafka_failure_is_counted_not_raised():
    ledger = FakeLedger()
    sim = Sim(seed=1, namespace="t", credentials=CallerCredentials(secret=SECRET),
              channels={"connects": FakeChannel(ledger)},  # type: ignore[dict-item]
              publish=lambda key, payload: (_ for _ in ()).throw(OSError("broker down")), accounts=5)
    (post,) = [f for f in all_flows() if f.name == "jobs_posted"]
    sim.flow = post.name
    post.step(sim)
    assert sim.tally.outcomes["jobs_posted", ERROR] == 1 and "broker down" in sim.tally.last_error


@pytest.mark.parametrize("rate", [50.0, 200.0])
def test_the_run_paces_events_at_the_rate_for_the_duration(rate):
    ledger, published = FakeLedger(), []
    sim = make_sim(1, ledger, published)
    tally = run(sim, all_flows(), rate=rate, duration=0.5)
    events = tally.total()  # flow steps that made a call or published (a few do nothing)
    assert 0.3 * rate * 0.5 <= events <= 1.6 * rate * 0.5 + 5


class Recorder:
    """A service that answers every call with an empty reply (from `messages`) and records (method, request)."""

    def __init__(self, messages: Any) -> None:
        self.messages = messages
        self.calls: list[tuple[str, Any]] = []

    def __call__(self, method: str, request: Any, metadata: Any) -> Any:
        name = method.rsplit("/", 1)[1]
        self.calls.append((name, request))
        return getattr(self.messages, f"{name}Response")()


def record_all(seed: int = 2, events: int = 1500) -> tuple[FakeLedger, Recorder, Recorder]:
    ledger, ads, billing = FakeLedger(), Recorder(apb), Recorder(bpb)
    channels = {"connects": FakeChannel(ledger), "ads": FakeChannel(ads), "billing": FakeChannel(billing)}
    sim = Sim(seed=seed, namespace="t", credentials=CallerCredentials(secret=SECRET), channels=channels,  # type: ignore[arg-type]
              publish=lambda key, payload: None, accounts=20)
    steps = iter(range(events))
    run(sim, all_flows(), rate=1e6, duration=None, should_stop=lambda: next(steps, None) is None)
    return ledger, ads, billing


def test_purchases_and_memberships_pay_with_sandbox_test_cards_that_do_not_page():
    _, _, billing = record_all()
    cards = Counter(r.payment_method for name, r in billing.calls if name in {"PurchaseConnects", "StartMembership"})
    assert set(cards) <= set(CARDS), f"not a sandbox card: {set(cards) - set(CARDS)}"
    assert {CARDS[c] for c in cards} >= {"succeed", "async", "card_declined", "dispute"}
    assert not {CARDS[c] for c in cards} & {"transient", "timeout"}  # billing answers those UNAVAILABLE
    assert cards["pm_card_visa"] > sum(cards.values()) / 2


def test_badges_start_in_a_category_and_free_connects_are_only_marketplace_bonuses():
    ledger, ads, _ = record_all()
    starts = [r for name, r in ads.calls if name == "StartBadge"]
    assert starts and all(r.category and r.weekly_max_connects > 0 for r in starts)
    credits = [req for name, req in ledger.calls if name == "Credit"]
    assert credits and all("source: LOT_SOURCE_BONUS" in req for req in credits)
