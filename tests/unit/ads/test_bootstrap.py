"""ads built the way it runs, through `bootstrap`, with a fake ledger and an injected clock, served by the kit."""

from __future__ import annotations

import secrets
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from adsmon.ads.v1 import ads_pb2 as apb
from adsmon.ads.v1 import ads_pb2_grpc
from sqlalchemy.engine import Engine

from services.ads.bootstrap import bootstrap
from services.ads.config import AdsConfig
from services.kit.auth import mint_token
from services.kit.db import Database
from services.kit.server import Server
from tests.conftest import unique
from tests.unit.ads.fakes import Clock, FakeConnects

pytestmark = pytest.mark.asyncio


async def test_a_bootstrapped_ads_holds_a_bid_in_the_ledger_and_ranks_it(engine: Engine, ledger: FakeConnects,
                                                                          clock: Clock, tmp_path: Path) -> None:
    secret = secrets.token_hex(32)
    config = AdsConfig.from_env({"ADSMON_TRANSPORT": "plaintext",
                                 "ADSMON_AUTH_SECRET": secret, "ADSMON_ADS_CONSUME_JOBS": "false",
                                 "ADSMON_RELAY_IN_PROCESS": "false",
                                 "ADSMON_ADS_DATABASE_URL": f"sqlite:///{tmp_path / 'ads.db'}"})
    config = replace(config, base=replace(config.base, grpc_port=0, metrics_port=0))
    app = bootstrap(config, database=Database(engine), clock=clock, connects=ledger)
    app.drain_delay_seconds = 0
    server = Server(app)
    await server.start()
    try:
        ledger.fund("f1", 50)
        md = (("authorization", f"Bearer {mint_token(secret.encode(), 'marketplace')}"),)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
            stub = ads_pb2_grpc.AdsServiceStub(channel)
            job = unique("job")
            await stub.PlaceBid(apb.PlaceBidRequest(request_id=unique("bid"), job_id=job, proposal_id="p1",
                                                    freelancer_id="f1", bid_connects=12), metadata=md)
            auction = await stub.GetAuction(apb.GetAuctionRequest(job_id=job), metadata=md)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.PlaceBid(apb.PlaceBidRequest(request_id=unique("bid"), job_id=job, proposal_id="p2",
                                                        freelancer_id="f2", bid_connects=0), metadata=md)
    finally:
        await server.stop()
    placebo = auction.auction.placebo
    assert [b.proposal_id for b in auction.auction.bids] == ["p1"]
    assert (ledger.available["f1"], ledger.held("f1")) == ((50, 0) if placebo else (38, 12))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION  # BID_TOO_LOW, as the proto documents
    assert len([c for c in ledger.calls if c[0] == "hold"]) == (0 if placebo else 1), "the refused bid held nothing"
