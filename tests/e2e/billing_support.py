"""The money-in stack as processes: the sandbox payment provider, connects, billing (restartable in place)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import sqlalchemy as sa
from adsmon.billing.v1 import billing_pb2 as bpb
from adsmon.billing.v1 import billing_pb2_grpc
from adsmon.connects.v1 import connects_pb2 as cpb
from adsmon.connects.v1 import connects_pb2_grpc

from services.kit.auth import mint_token
from tests.conftest import ROOT
from tests.e2e.conftest import ServiceProcess


@dataclass
class Sandbox:
    port: int
    webhook_port: int
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, capture_delay: float = 0.5) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.billing.adapters.sandbox_provider", "--port", str(self.port),
             "--webhook-url", f"http://127.0.0.1:{self.webhook_port}/webhooks", "--capture-delay",
             str(capture_delay)], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                self.get("/v1/payment_intents")
                return
            except OSError:
                time.sleep(0.1)
        raise AssertionError("sandbox provider did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=5) as resp:
            return json.loads(resp.read())

    def post(self, path: str, body: dict[str, Any]) -> Any:
        req = urllib.request.Request(self.url + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            return json.loads(resp.read())

    def intents(self, account_id: str | None = None) -> list[dict[str, Any]]:
        data = self.get("/v1/payment_intents")["data"]
        return [i for i in data if account_id is None or i["metadata"].get("account_id") == account_id]


def billing_settings(connects: ServiceProcess, sandbox: Sandbox, **extra: str) -> dict[str, str]:
    return {"ADSMON_BILLING_CONNECTS_TARGET": connects.target,
            "ADSMON_BILLING_PAYMENT_PROVIDER_URL": sandbox.url,
            "ADSMON_BILLING_WEBHOOK_PORT": str(sandbox.webhook_port),
            "ADSMON_BILLING_RESUME_AFTER_SECONDS": "1",
            "ADSMON_BILLING_RESUMER_INTERVAL_SECONDS": "0.2",
            "ADSMON_BILLING_RENEWAL_INTERVAL_SECONDS": "0.3",
            "ADSMON_BILLING_RENEWAL_RETRY_AFTER_SECONDS": "0.5", **extra}


def token(secret: bytes, caller: str = "operator") -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {mint_token(secret, caller)}"),)


class BillingClient:
    def __init__(self, target: str, secret: bytes) -> None:
        self.channel = grpc.insecure_channel(target)
        self.stub = billing_pb2_grpc.BillingServiceStub(self.channel)
        self.md = token(secret)

    def purchase(self, request_id: str, account_id: str, *, bundle_id: str = "", quantity: int = 0,
                 card: str = "pm_card_visa", timeout: float = 20, **kw: Any) -> bpb.Purchase:
        req = bpb.PurchaseConnectsRequest(request_id=request_id, account_id=account_id, payment_method=card, **kw)
        if bundle_id:
            req.bundle_id = bundle_id
        else:
            req.quantity = quantity
        return self.stub.PurchaseConnects(req, metadata=self.md, timeout=timeout).purchase

    def get(self, purchase_id: str) -> bpb.Purchase:
        return self.stub.GetPurchase(bpb.GetPurchaseRequest(purchase_id=purchase_id), metadata=self.md,
                                     timeout=10).purchase

    def close(self) -> None:
        self.channel.close()


def purchase_credits(connects: ServiceProcess, secret: bytes, account_id: str) -> list[cpb.LedgerTransaction]:
    """The account's PURCHASE credits in the real ledger."""
    with grpc.insecure_channel(connects.target) as ch:
        reply = connects_pb2_grpc.ConnectsServiceStub(ch).ListTransactions(
            cpb.ListTransactionsRequest(account_id=account_id, page_size=1000), metadata=token(secret), timeout=10)
    return [t for t in reply.transactions
            if t.kind == cpb.TRANSACTION_KIND_CREDIT and t.source == cpb.LOT_SOURCE_PURCHASE]


def plan_grants(connects: ServiceProcess, secret: bytes, account_id: str) -> list[cpb.LedgerTransaction]:
    with grpc.insecure_channel(connects.target) as ch:
        reply = connects_pb2_grpc.ConnectsServiceStub(ch).ListTransactions(
            cpb.ListTransactionsRequest(account_id=account_id, page_size=1000), metadata=token(secret), timeout=10)
    return [t for t in reply.transactions if t.source == cpb.LOT_SOURCE_PLAN_GRANT]


def balance(connects: ServiceProcess, secret: bytes, account_id: str) -> int:
    with grpc.insecure_channel(connects.target) as ch:
        return connects_pb2_grpc.ConnectsServiceStub(ch).GetBalance(
            cpb.GetBalanceRequest(account_id=account_id), metadata=token(secret), timeout=10).available


def query(service: ServiceProcess, sql: str, **params: Any) -> list[Any]:
    engine = sa.create_engine(service.env[f"ADSMON_{service.name.upper()}_DATABASE_URL"])
    try:
        with engine.begin() as conn:
            result = conn.execute(sa.text(sql), params)
            return result.all() if result.returns_rows else []
    finally:
        engine.dispose()
