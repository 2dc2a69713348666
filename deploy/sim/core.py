"""The simulator's engine: a seeded world of freelancers, clients and jobs, flows that act on it, and the tally.

A `Flow` is one kind of marketplace activity (deploy/sim/flows/, one module
each). `step(sim)` performs one event through the public APIs or
`marketplace.jobs.v1` and returns nothing; what happened is recorded through
`sim.call(...)`/`sim.publish(...)`, which classify the answer:

    ok          the service did it
    refused     a business or validation refusal (FAILED_PRECONDITION, INVALID_ARGUMENT, ALREADY_EXISTS,
                NOT_FOUND): realistic traffic contains those (a freelancer out of Connects)
    not_built   UNIMPLEMENTED: the service does not answer that method yet (ads and billing while their
                issues are open); counted per flow, never a crash
    error       anything else (UNAVAILABLE, INTERNAL, DEADLINE_EXCEEDED...): the suite's fault

Every choice comes from one `random.Random(seed)`: the same seed and options give the same sequence of
actions and amounts. Ids are namespaced by `namespace` (default: the seed and the start time), so a repeat
is new activity; pass the same namespace to replay the same request ids (every call then answers from the
idempotency stores).
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc
from google.protobuf import message as pb_message

from services.kit.identities import CallerCredentials

OK, REFUSED, NOT_BUILT, ERROR = "ok", "refused", "not_built", "error"
_REFUSALS = {grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.ALREADY_EXISTS,
             grpc.StatusCode.NOT_FOUND, grpc.StatusCode.OUT_OF_RANGE}
CATEGORIES = ("web-dev", "mobile", "design", "writing", "data", "devops", "marketing", "translation")
PROPOSAL_COSTS = (0, 2, 4, 6, 8, 12, 16)  # the marketplace's rate card (jobs.proto)


class Flow(Protocol):
    """One kind of activity; `weight` is its share of the events."""

    name: str
    service: str  # whose API it exercises: connects, ads, billing (or marketplace for Kafka-only flows)
    weight: float

    def step(self, sim: Sim) -> None: ...


@dataclass
class Job:
    job_id: str
    client_id: str
    category: str
    cost: int
    proposals: list[tuple[str, str]] = field(default_factory=list)  # (proposal_id, freelancer_id)
    spent: bool = False  # some proposal paid Connects (a cancel then returns them)


@dataclass
class World:
    freelancers: list[str]
    clients: list[str]
    jobs: list[Job] = field(default_factory=list)
    closed: int = 0  # jobs hired, cancelled or removed
    badges: set[str] = field(default_factory=set)
    members: set[str] = field(default_factory=set)
    campaigns: list[str] = field(default_factory=list)
    placements: list[str] = field(default_factory=list)  # tokens served, not clicked yet

    def open_job(self, rng: random.Random) -> Job | None:
        return rng.choice(self.jobs) if self.jobs else None

    def pick_proposal(self, rng: random.Random) -> tuple[Job, str, str] | None:
        """An open job that has proposals, one of them, and its freelancer."""
        jobs = [j for j in self.jobs if j.proposals]
        if not jobs:
            return None
        job = rng.choice(jobs)
        proposal_id, freelancer = rng.choice(job.proposals)
        return job, proposal_id, freelancer

    def close(self, job: Job) -> None:
        self.jobs.remove(job)
        self.closed += 1


@dataclass
class Tally:
    """What happened, by flow and outcome, and the Connects the suite moved."""

    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)
    connects_moved: int = 0
    last_error: str = ""
    refusals: Counter[tuple[str, str]] = field(default_factory=Counter)  # (service.Method, status code) -> calls

    def total(self, outcome: str | None = None) -> int:
        return sum(n for (_, o), n in self.outcomes.items() if outcome is None or o == outcome)

    def not_built(self) -> list[str]:
        return sorted({f for (f, o) in self.outcomes if o == NOT_BUILT})


class Sim:
    """The world, the rng, the stubs and the tally; flows act through it.

    `channels` is a channel per service (plaintext: the caller is in the bearer token) or a function
    (service, caller) -> channel, e.g. a `ChannelPool` (under mutual TLS the caller is the channel's
    certificate).
    """

    def __init__(self, *, seed: int, namespace: str, credentials: CallerCredentials,
                 channels: Mapping[str, grpc.Channel] | Callable[[str, str], grpc.Channel],
                 publish: Callable[[str, pb_message.Message], None], accounts: int = 200) -> None:
        self.rng = random.Random(seed)
        self.namespace = namespace
        self.channels = channels
        self._publish = publish
        self._metadata = {caller: credentials.metadata(caller) for caller in ("marketplace", "billing", "operator")}
        self.world = World([self.id("fl", i) for i in range(accounts)],
                           [self.id("cl", i) for i in range(max(1, accounts // 4))])
        self.tally = Tally()
        self._serial = 0
        self.flow = ""  # the flow being stepped (for the tally)

    def id(self, kind: str, n: int | None = None) -> str:
        if n is None:
            self._serial += 1
            n = self._serial
        return f"{self.namespace}-{kind}-{n}"

    def call(self, service: str, stub_cls: Any, method: str, request: pb_message.Message, *,
             caller: str = "marketplace", moves: Callable[[Any], int] | None = None) -> Any | None:
        """Call `method`; tally the outcome; return the reply (None unless ok)."""
        channels = self.channels
        stub = stub_cls(channels(service, caller) if callable(channels) else channels[service])
        try:
            reply = getattr(stub, method)(request, metadata=self._metadata[caller], timeout=10)
        except grpc.RpcError as exc:
            code = exc.code()
            outcome = NOT_BUILT if code is grpc.StatusCode.UNIMPLEMENTED else REFUSED if code in _REFUSALS else ERROR
            if outcome == ERROR:
                self.tally.last_error = f"{service}.{method}: {code.name} {exc.details()}"[:160]
            elif outcome == REFUSED:
                self.tally.refusals[f"{service}.{method}", code.name] += 1
            self.tally.outcomes[self.flow, outcome] += 1
            return None
        self.tally.outcomes[self.flow, OK] += 1
        if moves is not None:
            self.tally.connects_moved += moves(reply)
        return reply

    def publish(self, payload: pb_message.Message, key: str) -> None:
        """Put a marketplace.jobs.v1 event on Kafka (the marketplace's side of the contract)."""
        try:
            self._publish(key, payload)
        except Exception as exc:  # Kafka trouble is an error event, not a crash of the simulator
            self.tally.last_error = f"kafka: {exc}"[:160]
            self.tally.outcomes[self.flow, ERROR] += 1
            return
        self.tally.outcomes[self.flow, OK] += 1


def run(sim: Sim, flows: list[Flow], *, rate: float, duration: float | None,
        progress: Callable[[str], None] | None = None, should_stop: Callable[[], bool] = lambda: False) -> Tally:
    """Step seeded-random flows at `rate` events/s for `duration` seconds (None: until should_stop())."""
    weights = [f.weight for f in flows]
    started = time.monotonic()
    next_at, next_report, events = started, started + 1.0, 0
    last_events, last_time = 0, started
    while not should_stop() and (duration is None or time.monotonic() - started < duration):
        flow = sim.rng.choices(flows, weights)[0]
        sim.flow = flow.name
        flow.step(sim)
        events += 1
        next_at += sim.rng.expovariate(rate)  # Poisson arrivals at `rate`
        now = time.monotonic()
        if progress is not None and now >= next_report:
            progress(progress_line(sim.tally, (events - last_events) / (now - last_time), now - started))
            last_events, last_time, next_report = events, now, now + 1.0
        while not should_stop() and (wait := next_at - time.monotonic()) > 0:
            time.sleep(min(wait, 0.5))
    if progress is not None:
        elapsed = max(time.monotonic() - started, 1e-9)
        progress(progress_line(sim.tally, events / elapsed, elapsed))
    return sim.tally


def progress_line(t: Tally, rate: float, elapsed: float) -> str:
    line = (f"{elapsed:6.0f}s  {rate:6.1f} events/s  ok {t.total(OK)}  refused {t.total(REFUSED)}  "
            f"errors {t.total(ERROR)}  not built {t.total(NOT_BUILT)}  Connects moved {t.connects_moved}")
    if t.not_built():
        line += f"  (not built: {', '.join(t.not_built())})"
    if t.total(ERROR) and t.last_error:
        line += f"  last error: {t.last_error}"
    return line
