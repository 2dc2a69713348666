"""Bad configuration fails fast with one clear line; SIGTERM shuts down cleanly, also with calls in flight."""

from __future__ import annotations

import asyncio
import importlib
import os
import signal
import subprocess
import sys
from collections import Counter

import grpc
import pytest
import sqlalchemy as sa
from adsmon.connects.v1 import connects_pb2 as pb
from adsmon.connects.v1 import connects_pb2_grpc

from services.kit.auth import mint_token
from tests.conftest import ROOT, unique
from tests.e2e.conftest import free_port
from tests.integration.connects.conftest import assert_books_balance

pytestmark = pytest.mark.e2e


def start(service: str, secret_file, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("ADSMON_")}
    base.update({"ADSMON_TRANSPORT": "plaintext", "ADSMON_AUTH_SECRET_FILE": str(secret_file),
                 "ADSMON_GRPC_PORT": str(free_port()),
                 "ADSMON_METRICS_PORT": str(free_port()),
                 "ADSMON_KAFKA_BOOTSTRAP": os.environ["ADSMON_KAFKA_BOOTSTRAP"]})
    base.update(env)
    return subprocess.run([sys.executable, "-m", f"services.{service}", *args], cwd=ROOT, env=base,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(("service", "env", "expected"), [
    ("billing", {"ADSMON_BILLING_DATABASE_URL": "postgresql+psycopg://u:topsecret@127.0.0.1:1/db"},
     "billing: cannot start: database unreachable at postgresql+psycopg://u:***@127.0.0.1:1/db"),
    ("ads", {"ADSMON_ADS_GRPC_PORT": "not-a-port"},
     "ads: cannot start: ADSMON_ADS_GRPC_PORT='not-a-port' is not an integer"),
    ("connects", {"ADSMON_KAFKA_BOOTSTRAP": "127.0.0.1:1"},
     "connects: cannot start: kafka unreachable at 127.0.0.1:1"),
    ("billing", {"ADSMON_AUTH_SECRET_FILE": "/nonexistent/secret"},
     "billing: cannot start: ADSMON_AUTH_SECRET_FILE: cannot read secret file"),
])
def test_bad_configuration_fails_fast_with_one_line(tmp_path, secret_file, service, env, expected):
    env.setdefault(f"ADSMON_{service.upper()}_DATABASE_URL", f"sqlite:///{tmp_path}/{service}.db")
    result = start(service, secret_file, **env)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(expected), lines[0]
    assert "topsecret" not in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.parametrize(("command", "env", "expected"), [
    ("relay", {"ADSMON_CONNECTS_DATABASE_URL": "postgresql+psycopg://u:topsecret@127.0.0.1:1/db"},
     "connects: cannot start: database unreachable at postgresql+psycopg://u:***@127.0.0.1:1/db"),
    ("relay", {"ADSMON_LOG_LEVEL": "LOUD"},
     "connects: cannot start: ADSMON_LOG_LEVEL='LOUD' is not one of DEBUG, INFO, WARNING, ERROR"),
    ("migrate", {"ADSMON_CONNECTS_DB_POOL_SIZE": "0"},
     "connects: cannot start: ADSMON_CONNECTS_DB_POOL_SIZE=0 is out of range [1, 200]"),
    ("bogus", {}, "usage: python -m services.connects [serve [--processes N] | migrate | relay]"),
])
def test_relay_and_migrate_turn_a_bad_setting_into_exit_code_2_and_one_line(tmp_path, secret_file, command, env,
                                                                            expected):
    env.setdefault("ADSMON_CONNECTS_DATABASE_URL", f"sqlite:///{tmp_path}/connects.db")
    result = start("connects", secret_file, command, **env)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(expected), result.stderr
    assert "topsecret" not in result.stderr + result.stdout


@pytest.mark.parametrize("service", ["connects", "ads", "billing"])
def test_migrate_brings_an_empty_database_to_the_newest_revision_and_exits_0(tmp_path, secret_file, service):
    url = f"sqlite:///{tmp_path}/{service}.db"
    result = start(service, secret_file, "migrate", **{f"ADSMON_{service.upper()}_DATABASE_URL": url})
    assert result.returncode == 0, result.stderr
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            revision = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one()
        assert "outbox" in sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()
    assert revision == importlib.import_module(f"services.{service}.bootstrap").SPEC.migrations.head()


def test_busy_port_fails_fast_with_one_line(tmp_path, secret_file, suite_port_holder):
    result = start("ads", secret_file, ADSMON_ADS_DATABASE_URL=f"sqlite:///{tmp_path}/ads.db",
                   ADSMON_ADS_GRPC_PORT=str(suite_port_holder))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"ads: cannot start: cannot listen for gRPC on 127.0.0.1:{suite_port_holder}: Address already in use"]


@pytest.fixture
def suite_port_holder():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def test_sigterm_drains_and_exits_zero(launch):
    billing = launch("billing")
    assert billing.stop() == 0
    assert '"msg": "stopped"' in billing.log_tail()


async def spend_through_a_sigterm(connects, token: str, account: str, ids: list[str], signal_after: int
                                  ) -> dict[str, grpc.StatusCode]:
    """Keep 64 spends in flight; SIGTERM once `signal_after` are answered; the code each call ended with."""
    codes: dict[str, grpc.StatusCode] = {}
    gate = asyncio.Semaphore(64)
    async with grpc.aio.insecure_channel(connects.target) as ch:
        stub = connects_pb2_grpc.ConnectsServiceStub(ch)

        async def one(rid: str) -> None:
            async with gate:
                try:
                    await stub.Spend(pb.SpendRequest(request_id=rid, account_id=account, amount=1,
                                                     reason=pb.SPEND_REASON_PROPOSAL),
                                     metadata=(("authorization", f"Bearer {token}"),), timeout=20)
                    codes[rid] = grpc.StatusCode.OK
                except grpc.aio.AioRpcError as exc:
                    codes[rid] = exc.code()
                if len(codes) == signal_after:
                    connects.proc.send_signal(signal.SIGTERM)

        await asyncio.gather(*(one(rid) for rid in ids))
    return codes


def test_sigterm_with_calls_in_flight_commits_exactly_the_answered_calls(launch, auth_secret):
    connects = launch("connects", ADSMON_SHUTDOWN_GRACE_SECONDS="10")
    token = mint_token(auth_secret, "operator")
    account = unique("drain")
    with grpc.insecure_channel(connects.target) as ch:
        connects_pb2_grpc.ConnectsServiceStub(ch).Credit(
            pb.CreditRequest(request_id=unique("credit"), account_id=account, amount=10_000,
                             source=pb.LOT_SOURCE_BONUS), metadata=(("authorization", f"Bearer {token}"),), timeout=10)
    ids = [f"{account}-{i}" for i in range(2000)]
    codes = asyncio.run(spend_through_a_sigterm(connects, token, account, ids, signal_after=200))
    assert connects.proc.wait(timeout=30) == 0
    assert '"msg": "stopped"' in connects.log_tail()
    outcomes = Counter(code.name for code in codes.values())
    # Known gap (reported): calls the server holds when its gRPC stop begins can end CANCELLED, not drained;
    # they are never committed (checked below), but the connects client retries only UNAVAILABLE.
    assert set(outcomes) <= {"OK", "UNAVAILABLE", "CANCELLED"}, outcomes
    assert outcomes["OK"] >= 200 and outcomes["UNAVAILABLE"] > 0, "the signal came with calls still to send"
    answered = {rid for rid, code in codes.items() if code is grpc.StatusCode.OK}
    engine = sa.create_engine(connects.env["ADSMON_CONNECTS_DATABASE_URL"])
    try:
        with engine.connect() as conn:
            committed = set(conn.execute(sa.text("SELECT request_id FROM idempotency_keys WHERE request_id = ANY(:i)"),
                                         {"i": ids}).scalars())
            available = conn.execute(sa.text("SELECT available FROM wallets WHERE account_id = :a"),
                                     {"a": account}).scalar_one()
        assert committed == answered, "an UNAVAILABLE call was committed, or an answered one was lost"
        assert available == 10_000 - len(answered)
        assert_books_balance(engine)
    finally:
        engine.dispose()
