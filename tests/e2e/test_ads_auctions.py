"""ads against the real connects service, PostgreSQL and Kafka: bids hold Connects, settlement captures and
releases exactly as the rules say, and the ledger agrees with the auctions to the Connect."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
import sqlalchemy as sa
from adsmon.ads.v1 import ads_pb2 as apb
from adsmon.ads.v1 import ads_pb2_grpc
from adsmon.connects.v1 import connects_pb2 as cpb
from adsmon.connects.v1 import connects_pb2_grpc
from adsmon.marketplace.v1 import jobs_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from services.ads.adapters.topics import MARKETPLACE_JOBS
from services.ads.domain.auction import is_placebo
from services.kit.auth import mint_token
from services.kit.kafka import encode_event, make_event, make_producer
from tests.conftest import unique
from tests.e2e.conftest import ServiceProcess

pytestmark = pytest.mark.e2e


@dataclass
class Clients:
    ads: ads_pb2_grpc.AdsServiceStub
    connects: connects_pb2_grpc.ConnectsServiceStub
    metadata: tuple[tuple[str, str], ...]

    def call(self, stub: Any, method: str, request: Any) -> Any:
        return getattr(stub, method)(request, metadata=self.metadata, timeout=20)

    def fund(self, account: str, amount: int) -> None:
        self.call(self.connects, "Credit", cpb.CreditRequest(request_id=unique("credit"), account_id=account,
                                                             amount=amount, source=cpb.LOT_SOURCE_BONUS,
                                                             reference="signup"))

    def balance(self, account: str) -> cpb.GetBalanceResponse:
        return self.call(self.connects, "GetBalance", cpb.GetBalanceRequest(account_id=account))

    def transactions(self, account: str) -> list[cpb.LedgerTransaction]:
        reply = self.call(self.connects, "ListTransactions",
                          cpb.ListTransactionsRequest(account_id=account, page_size=1000))
        return list(reply.transactions)

    def bid(self, job: str, proposal: str, freelancer: str, amount: int, request_id: str | None = None) -> apb.Bid:
        reply = self.call(self.ads, "PlaceBid", apb.PlaceBidRequest(
            request_id=request_id or unique("bid"), job_id=job, proposal_id=proposal, freelancer_id=freelancer,
            bid_connects=amount))
        return reply.bid

    def auction(self, job: str) -> apb.Auction:
        return self.call(self.ads, "GetAuction", apb.GetAuctionRequest(job_id=job)).auction

    def close(self, job: str, reason: int = apb.AUCTION_CLOSE_REASON_MANUAL) -> apb.Auction:
        return self.call(self.ads, "CloseAuction", apb.CloseAuctionRequest(request_id=unique("close"), job_id=job,
                                                                          reason=reason)).auction

    def wait_closed(self, job: str, timeout: float = 30) -> apb.Auction:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            auction = self.auction(job)
            if auction.status == apb.AUCTION_STATUS_CLOSED:
                return auction
            time.sleep(0.2)
        raise AssertionError(f"auction {job} not CLOSED after {timeout}s: {auction}")


def reason_of(exc: grpc.RpcError) -> str:
    status = rpc_status.from_call(exc)
    assert status is not None, exc
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info.reason
    raise AssertionError(f"no ErrorInfo in {exc}")


def organic_job() -> str:
    while is_placebo(job := unique("job"), 0.02):
        pass
    return job


@pytest.fixture(scope="module")
def services(launch: Callable[..., ServiceProcess]) -> dict[str, ServiceProcess]:
    connects = launch("connects")
    ads = launch("ads", ADSMON_ADS_CONNECTS_TARGET=connects.target, ADSMON_ADS_SETTLEMENT_INTERVAL_SECONDS="0.2",
                 ADSMON_ADS_SETTLEMENT_CONCURRENCY="2")
    return {"connects": connects, "ads": ads}


@pytest.fixture(scope="module")
def clients(services: dict[str, ServiceProcess], auth_secret: bytes) -> Iterator[Clients]:
    metadata = (("authorization", f"Bearer {mint_token(auth_secret, 'operator')}"),)
    with grpc.insecure_channel(services["ads"].target) as ads_ch, \
            grpc.insecure_channel(services["connects"].target) as connects_ch:
        yield Clients(ads_pb2_grpc.AdsServiceStub(ads_ch), connects_pb2_grpc.ConnectsServiceStub(connects_ch),
                      metadata)


def test_bids_hold_connects_and_settlement_matches_the_ledger_to_the_connect(clients: Clients) -> None:
    job = organic_job()
    amounts = [3, 9, 4, 7, 5, 6]
    freelancers = [unique("fl") for _ in amounts]
    for f in freelancers:
        clients.fund(f, 40)
    for i, (f, amount) in enumerate(zip(freelancers, amounts, strict=True)):
        bid = clients.bid(job, f"p{i}", f, amount)
        assert bid.state == apb.BID_STATE_HELD and bid.hold_id
        balance = clients.balance(f)
        assert (balance.available, balance.held) == (40 - amount, amount)
    auction = clients.auction(job)
    assert [b.proposal_id for b in auction.bids] == ["p1", "p3", "p5", "p4", "p2", "p0"]
    assert [b.boosted for b in auction.bids] == [True] * 4 + [False] * 2
    # the lowest bid was boosted when the client messaged it: it pays although outbid later
    job2 = organic_job()
    early, late = unique("fl"), [unique("fl") for _ in range(4)]
    for f in (early, *late):
        clients.fund(f, 40)
    clients.bid(job2, "early", early, 2)
    reply = clients.call(clients.ads, "RecordInteraction", apb.RecordInteractionRequest(
        request_id=unique("rq"), job_id=job2, proposal_id="early", kind=apb.INTERACTION_KIND_SHORTLISTED))
    assert reply.counted and reply.bid.interacted_while_boosted
    for i, f in enumerate(late):
        clients.bid(job2, f"late{i}", f, 10)

    closing = clients.close(job)
    assert closing.status in (apb.AUCTION_STATUS_CLOSING, apb.AUCTION_STATUS_CLOSED)
    clients.close(job2, apb.AUCTION_CLOSE_REASON_FIRST_HIRE)
    closed = clients.wait_closed(job)
    clients.wait_closed(job2)
    charged = {b.proposal_id for b in closed.bids if b.state == apb.BID_STATE_CHARGED}
    assert charged == {"p1", "p3", "p5", "p4"}
    for i, (f, amount) in enumerate(zip(freelancers, amounts, strict=True)):
        paid = amount if f"p{i}" in charged else 0
        balance = clients.balance(f)
        assert (balance.available, balance.held) == (40 - paid, 0), f"p{i}"
        kinds = sorted(cpb.TransactionKind.Name(t.kind) for t in clients.transactions(f))
        assert kinds == sorted(["TRANSACTION_KIND_CREDIT", "TRANSACTION_KIND_HOLD",
                                "TRANSACTION_KIND_CAPTURE" if paid else "TRANSACTION_KIND_RELEASE"])
    assert clients.balance(early).available == 38 and clients.balance(early).held == 0
    assert all(clients.balance(f).available == 30 for f in late)

    before = {f: len(clients.transactions(f)) for f in freelancers}
    clients.close(job)  # closing a closed auction changes nothing in the ledger
    time.sleep(1)
    assert {f: len(clients.transactions(f)) for f in freelancers} == before


def test_a_bidder_without_enough_connects_is_refused_and_nothing_is_held(clients: Clients) -> None:
    job, poor = organic_job(), unique("poor")
    clients.fund(poor, 3)
    with pytest.raises(grpc.RpcError) as refused:
        clients.bid(job, "p1", poor, 4)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(refused.value) == "INSUFFICIENT_CONNECTS"
    balance = clients.balance(poor)
    assert (balance.available, balance.held) == (3, 0)
    assert list(clients.auction(job).bids) == []


@pytest.mark.parametrize("amount, code, reason", [
    (0, grpc.StatusCode.FAILED_PRECONDITION, "BID_TOO_LOW"),
    (-1, grpc.StatusCode.FAILED_PRECONDITION, "BID_TOO_LOW"),
    (9_223_372_036_854_775_807, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD"),
])
def test_zero_negative_and_absurd_bids_get_clear_errors(clients: Clients, amount: int, code: grpc.StatusCode,
                                                        reason: str) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        clients.bid(organic_job(), "p1", unique("fl"), amount)
    assert refused.value.code() == code and reason_of(refused.value) == reason


def test_unknown_jobs_and_closed_auctions_get_clear_errors(clients: Clients) -> None:
    with pytest.raises(grpc.RpcError) as unknown:
        clients.auction(unique("nojob"))
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND and reason_of(unknown.value) == "AUCTION_NOT_FOUND"
    with pytest.raises(grpc.RpcError) as unknown_close:
        clients.close(unique("nojob"))
    assert unknown_close.value.code() == grpc.StatusCode.NOT_FOUND
    job, f = organic_job(), unique("fl")
    clients.fund(f, 10)
    clients.bid(job, "p1", f, 2)
    clients.close(job)
    with pytest.raises(grpc.RpcError) as closed:
        clients.bid(job, "p2", f, 2)
    assert closed.value.code() == grpc.StatusCode.FAILED_PRECONDITION and reason_of(closed.value) == "AUCTION_CLOSED"
    with pytest.raises(grpc.RpcError) as missing:
        clients.bid("", "p2", f, 2)
    assert missing.value.code() == grpc.StatusCode.INVALID_ARGUMENT and reason_of(missing.value) == "INVALID_FIELD"


def test_a_repeated_place_bid_holds_once(clients: Clients) -> None:
    job, f = organic_job(), unique("fl")
    clients.fund(f, 10)
    first = clients.bid(job, "p1", f, 4, request_id="same-" + job)
    again = clients.bid(job, "p1", f, 4, request_id="same-" + job)
    assert again.hold_id == first.hold_id
    assert clients.balance(f).held == 4
    with pytest.raises(grpc.RpcError) as reused:
        clients.bid(job, "p1", f, 5, request_id="same-" + job)
    assert reason_of(reused.value) == "REQUEST_ID_REUSED"


def test_a_raised_bid_grows_its_hold_and_is_captured_at_the_new_amount(clients: Clients) -> None:
    job, f = organic_job(), unique("fl")
    clients.fund(f, 12)
    first = clients.bid(job, "p1", f, 4)
    raised = clients.call(clients.ads, "PlaceBid", apb.PlaceBidRequest(
        request_id=unique("bid"), job_id=job, proposal_id="p1", freelancer_id=f, bid_connects=10))
    assert raised.raised and raised.bid.bid_connects == 10 and raised.bid.hold_id == first.hold_id
    assert (clients.balance(f).available, clients.balance(f).held) == (2, 10)
    with pytest.raises(grpc.RpcError) as refused:
        clients.bid(job, "p1", f, 13)  # 3 more than the wallet has
    assert reason_of(refused.value) == "INSUFFICIENT_CONNECTS"
    assert (clients.balance(f).available, clients.balance(f).held) == (2, 10)
    assert clients.auction(job).bids[0].bid_connects == 10
    clients.close(job)
    assert clients.wait_closed(job).bids[0].state == apb.BID_STATE_CHARGED
    assert (clients.balance(f).available, clients.balance(f).held) == (2, 0)
    captures = [t for t in clients.transactions(f) if t.kind == cpb.TRANSACTION_KIND_CAPTURE]
    assert [t.amount for t in captures] == [10]


def publish_job_event(kafka_bootstrap: str, job: str, message: Any) -> None:
    producer = make_producer(kafka_bootstrap, client_id="tests-marketplace")
    try:
        event = make_event(message, job, "marketplace")
        producer.send(os.environ["ADSMON_KAFKA_TOPIC_PREFIX"] + MARKETPLACE_JOBS, key=job.encode(),
                      value=encode_event(event)).get(timeout=10)
    finally:
        producer.close()


def test_marketplace_events_open_close_and_cancel_auctions(clients: Clients, kafka_bootstrap: str) -> None:
    hired, cancelled = organic_job(), organic_job()
    publish_job_event(kafka_bootstrap, hired, jobs_pb2.JobPosted(job_id=hired, client_id="c", category="python"))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            clients.auction(hired)
            break
        except grpc.RpcError:
            time.sleep(0.3)
    f1, f2 = unique("fl"), unique("fl")
    clients.fund(f1, 20)
    clients.fund(f2, 20)
    clients.bid(hired, "p1", f1, 5)
    clients.bid(cancelled, "p2", f2, 6)
    publish_job_event(kafka_bootstrap, hired, jobs_pb2.ProposalInteraction(
        job_id=hired, proposal_id="p1", kind=jobs_pb2.INTERACTION_KIND_MESSAGED))
    publish_job_event(kafka_bootstrap, hired, jobs_pb2.JobHired(job_id=hired, proposal_id="p1", freelancer_id=f1))
    publish_job_event(kafka_bootstrap, cancelled, jobs_pb2.JobCancelled(job_id=cancelled))
    done = clients.wait_closed(hired)
    assert done.close_reason == apb.AUCTION_CLOSE_REASON_FIRST_HIRE and done.bids[0].interacted_while_boosted
    assert clients.wait_closed(cancelled).close_reason == apb.AUCTION_CLOSE_REASON_JOB_CANCELLED
    assert (clients.balance(f1).available, clients.balance(f1).held) == (15, 0)
    assert (clients.balance(f2).available, clients.balance(f2).held) == (20, 0)


AUCTIONS, BIDS_PER_AUCTION = 50, 5


def test_sigkill_while_closing_50_auctions_then_restart_finishes_every_close_exactly_once(
        services: dict[str, ServiceProcess], clients: Clients) -> None:
    ads = services["ads"]
    jobs = [organic_job() for _ in range(AUCTIONS)]
    freelancers = [unique("crash") for _ in range(BIDS_PER_AUCTION + 1)]
    for f in freelancers:
        clients.fund(f, 10_000)
    expected: dict[str, int] = dict.fromkeys(freelancers, 0)
    for job in jobs:
        for i in range(BIDS_PER_AUCTION + 1):  # 6 bids: the 4 best are charged, 2 released
            amount = 1 + (i * 7 + len(job)) % 9
            clients.bid(job, f"p{i}", freelancers[i], amount)
        ranked = sorted(((b.bid_connects, b.placed_at.ToNanoseconds(), b.freelancer_id)
                         for b in clients.auction(job).bids), key=lambda x: (-x[0], x[1]))
        for amount, _, f in ranked[:4]:
            expected[f] += amount
    engine = sa.create_engine(ads.env["ADSMON_ADS_DATABASE_URL"])
    try:
        for job in jobs:
            clients.close(job, apb.AUCTION_CLOSE_REASON_EXPIRED)
        total = AUCTIONS * (BIDS_PER_AUCTION + 1)
        done = 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                done = conn.execute(sa.text(
                    "SELECT count(*) FROM ads_settlement_steps WHERE status = 'DONE' AND job_id = ANY(:jobs)"),
                    {"jobs": jobs}).scalar_one()
            if done >= 10:
                break
            time.sleep(0.01)
        os.kill(ads.proc.pid, signal.SIGKILL)  # type: ignore[union-attr]
        assert ads.proc.wait(timeout=10) == -signal.SIGKILL  # type: ignore[union-attr]
        with engine.connect() as conn:
            done_at_kill = conn.execute(sa.text(
                "SELECT count(*) FROM ads_settlement_steps WHERE status = 'DONE' AND job_id = ANY(:jobs)"),
                {"jobs": jobs}).scalar_one()
        assert 0 < done_at_kill < total, f"the kill should land mid-settlement ({done_at_kill}/{total})"
        ads.start()
        for job in jobs:
            clients.wait_closed(job, timeout=90)
    finally:
        engine.dispose()
    for f in freelancers:
        balance = clients.balance(f)
        assert (balance.available, balance.held) == (10_000 - expected[f], 0), f
        txs = clients.transactions(f)
        holds = [t.hold_id for t in txs if t.kind == cpb.TRANSACTION_KIND_HOLD]
        resolved = [t.hold_id for t in txs if t.kind in (cpb.TRANSACTION_KIND_CAPTURE, cpb.TRANSACTION_KIND_RELEASE)]
        assert sorted(holds) == sorted(resolved), "every hold resolved exactly once"
        assert sum(t.amount for t in txs if t.kind == cpb.TRANSACTION_KIND_CAPTURE) == expected[f]


def test_metrics_show_bids_settlement_and_badges(services: dict[str, ServiceProcess], clients: Clients) -> None:
    import urllib.request

    job, f = organic_job(), unique("fl")
    clients.fund(f, 30)
    clients.bid(job, "p1", f, 2)
    clients.close(job)
    clients.wait_closed(job)
    clients.call(clients.ads, "StartBadge", apb.StartBadgeRequest(request_id=unique("badge"), freelancer_id=f,
                                                                  weekly_max_connects=10, category="python"))
    deadline, text = time.monotonic() + 20, ""
    while time.monotonic() < deadline:
        text = urllib.request.urlopen(f"http://127.0.0.1:{services['ads'].metrics_port}/metrics", timeout=5
                                      ).read().decode()
        if "ads_badges_active 1.0" in text or "ads_badges_active 2.0" in text:
            break
        time.sleep(1)
    for series in ('ads_bids_total{result="placed"}', 'ads_settlement_steps_total{action="capture",result="ok"}',
                   'ads_auctions_closed_total{reason="manual"}', 'ads_charged_connects_total{product="boost"}',
                   "ads_settlement_backlog 0.0", "ads_settlement_oldest_step_age_seconds 0.0",
                   'ads_badge_charges_total{result="charged"} 1.0', 'ads_charged_connects_total{product="badge"} 1.0',
                   "ads_placebo_share_configured 0.02", "ads_auctions_open",
                   'worker_up{service="ads",worker="settlement"} 1.0'):
        assert series in text, series
    assert clients.balance(f).available == 27  # 2 captured, 1 for the badge's first charge
