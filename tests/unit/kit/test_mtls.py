"""Service identity by mutual TLS: real grpc.aio servers on loopback with certificates from the project's CA script.

The CA and identities come from `deploy/local/dev-ca.sh` itself (into a temporary directory), so the script is
tested too; the test adds, with openssl, a `tests` identity, a certificate from another CA, one with only a CN
and one from a foreign SPIFFE trust domain. The servers are the kit's `Server` with each service's real POLICY,
configured the way a deployment is (ADSMON_TLS_DIR, ADSMON_TRANSPORT unset: tls is the default).

What issue 11 asks to be shown, here:
- no client certificate, or one from another CA: the handshake fails (UNAVAILABLE at the client) and no RPC
  reaches the service (grpc_server_started_total does not move);
- the wrong service: PERMISSION_DENIED CALLER_NOT_ALLOWED, counted in grpc_server_handled_total;
- the allow list method by method for every service, every identity (the table of test_service_policies);
- a service with neither TLS files nor an explicit ADSMON_TRANSPORT=plaintext exits 2 with one line.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from adsmon.connects.v1 import connects_pb2, connects_pb2_grpc
from google.protobuf.message_factory import GetMessageClass

from services.connects.client import GrpcConnectsClient
from services.kit.auth import current_caller, mint_token
from services.kit.clients import channel, sync_channel
from services.kit.config import ConfigError, ServiceConfig
from services.kit.identities import CallerCredentials
from services.kit.server import App, Server, ServiceRegistration
from services.kit.startup import StartupError
from services.kit.tls import TlsFiles
from tests.conftest import error_info, metric
from tests.unit.test_service_policies import CALLERS, CASES, SERVICES, check_answer, expected_callers

ROOT = Path(__file__).resolve().parents[3]
CONNECTS = connects_pb2.DESCRIPTOR.services_by_name["ConnectsService"].full_name


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def issue(directory: Path, name: str, *, ca_dir: Path, subject: str, san: str | None) -> None:
    """`name`.crt/.key in `directory`, signed by the CA in `ca_dir`, with `san` (None: no SAN at all)."""
    key, csr, ext = directory / f"{name}.key", directory / f"{name}.csr", directory / f"{name}.ext"
    ext.write_text("extendedKeyUsage=clientAuth\n" + (f"subjectAltName={san}\n" if san else ""))
    openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(key))
    openssl("req", "-new", "-key", str(key), "-subj", subject, "-out", str(csr))
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca_dir / "ca.crt"), "-CAkey", str(ca_dir / "ca.key"),
            "-CAcreateserial", "-CAserial", str(directory / "ca.srl"), "-days", "2", "-extfile", str(ext),
            "-out", str(directory / f"{name}.crt"))
    if directory != ca_dir:
        (directory / "ca.crt").write_bytes((ca_dir / "ca.crt").read_bytes())


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Path]:
    """dev: the script's CA and identities, plus `tests`, `cn-only` and `foreign-domain`; other: another CA."""
    dev = tmp_path_factory.mktemp("tls")
    subprocess.run([str(ROOT / "deploy/local/dev-ca.sh"), str(dev)], check=True, capture_output=True)
    issue(dev, "tests", ca_dir=dev, subject="/CN=tests", san="URI:spiffe://adsmon.local/tests")
    issue(dev, "cn-only", ca_dir=dev, subject="/O=adsmon/CN=operator", san=None)
    issue(dev, "foreign-domain", ca_dir=dev, subject="/CN=x", san="URI:spiffe://evil.example/operator")
    other = tmp_path_factory.mktemp("other-ca")
    openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(other / "ca.key"))
    openssl("req", "-x509", "-new", "-key", str(other / "ca.key"), "-subj", "/CN=another CA", "-days", "2",
            "-out", str(other / "ca.crt"))
    issue(other, "marketplace", ca_dir=other, subject="/CN=marketplace", san="URI:spiffe://adsmon.local/marketplace")
    return {"dev": dev, "other": other}


def test_the_ca_script_makes_every_identity_with_its_spiffe_id_and_private_keys(pki):
    dev = pki["dev"]
    for name in ("connects", "ads", "billing", "marketplace", "operator"):
        text = subprocess.run(["openssl", "x509", "-in", str(dev / f"{name}.crt"), "-noout", "-text"],
                              check=True, capture_output=True, text=True).stdout
        assert f"URI:spiffe://adsmon.local/{name}" in text and "prime256v1" in text
        if name in ("connects", "ads", "billing"):
            assert "DNS:localhost" in text and "IP Address:127.0.0.1" in text and f"DNS:{name}" in text
        assert (dev / f"{name}.key").stat().st_mode & 0o777 == 0o600
        subprocess.run(["openssl", "verify", "-CAfile", str(dev / "ca.crt"), str(dev / f"{name}.crt")], check=True,
                       capture_output=True)
    assert (dev / "ca.key").stat().st_mode & 0o777 == 0o600


def test_the_ca_script_is_idempotent_and_reissues_a_missing_certificate(pki, tmp_path):
    d = tmp_path / "tls"
    subprocess.run([str(ROOT / "deploy/local/dev-ca.sh"), str(d)], check=True, capture_output=True)
    before = {p.name: p.read_bytes() for p in d.iterdir()}
    (d / "ads.crt").unlink()
    subprocess.run([str(ROOT / "deploy/local/dev-ca.sh"), str(d)], check=True, capture_output=True)
    after = {p.name: p.read_bytes() for p in d.iterdir()}
    assert after["ca.crt"] == before["ca.crt"] and after["connects.key"] == before["connects.key"]
    assert after["ads.crt"] != before["ads.crt"]
    subprocess.run(["openssl", "verify", "-CAfile", str(d / "ca.crt"), str(d / "ads.crt")], check=True,
                   capture_output=True)


class Who(connects_pb2_grpc.ConnectsServiceServicer):
    """GetBalance answers with the caller the interceptor took from the certificate."""

    async def GetBalance(self, request, context):
        return connects_pb2.GetBalanceResponse(account_id=current_caller())


def tls_config(name: str, tls_dir: Path, **env: str) -> ServiceConfig:
    return ServiceConfig.from_env(name, grpc_port=0, metrics_port=0, environ={
        "ADSMON_AUTH_SECRET": "s" * 32, "ADSMON_TLS_DIR": str(tls_dir), f"ADSMON_{name.upper()}_DATABASE_URL": "sqlite://",
        **env})


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def ports(pki) -> AsyncIterator[dict[str, int]]:
    """connects, ads and billing over mutual TLS with their real policies; `who`: connects answering GetBalance."""
    servers, ports = [], {}
    apps = {name: [ServiceRegistration(d.full_name, add, base(), policy)]
            for name, (d, policy, add, base) in SERVICES.items()}
    apps["who"] = [ServiceRegistration(CONNECTS, connects_pb2_grpc.add_ConnectsServiceServicer_to_server, Who(),
                                       SERVICES["connects"][1])]
    for name, registrations in apps.items():
        config = tls_config("connects" if name == "who" else name, pki["dev"])
        assert config.transport == "tls" and config.tls is not None
        server = Server(App(config, registrations, drain_delay_seconds=0.0))
        await server.start()
        servers.append(server)
        ports[name] = server.app.grpc_port
    yield ports
    for server in servers:
        await server.stop()


def as_caller(pki, caller: str, ca: str = "dev") -> TlsFiles:
    return TlsFiles.in_dir(pki[ca], caller)


async def get_balance(port: int, tls: TlsFiles | None, **kw) -> connects_pb2.GetBalanceResponse:
    if tls is None:  # TLS that trusts the server but presents no certificate
        creds = grpc.ssl_channel_credentials(root_certificates=Path(kw.pop("ca")).read_bytes())
        async with grpc.aio.secure_channel(f"127.0.0.1:{port}", creds) as ch:
            return await connects_pb2_grpc.ConnectsServiceStub(ch).GetBalance(
                connects_pb2.GetBalanceRequest(account_id="a"), timeout=5, **kw)
    async with channel(f"127.0.0.1:{port}", caller="x", tls=tls) as ch:
        return await connects_pb2_grpc.ConnectsServiceStub(ch).GetBalance(
            connects_pb2.GetBalanceRequest(account_id="a"), timeout=5, **kw)


def started(method: str = "GetBalance") -> float:
    return metric("grpc_server_started_total", grpc_type="unary", grpc_service=CONNECTS, grpc_method=method)


@pytest.mark.asyncio(loop_scope="module")
async def test_the_right_identity_is_served_and_the_service_sees_it_as_the_caller(ports, pki):
    for caller in ("marketplace", "operator", "billing", "ads"):
        reply = await get_balance(ports["who"], as_caller(pki, caller))
        assert reply.account_id == caller


@pytest.mark.asyncio(loop_scope="module")
async def test_a_call_without_a_client_certificate_fails_the_handshake(ports, pki):
    before = started()
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await get_balance(ports["who"], None, ca=str(pki["dev"] / "ca.crt"))
    assert exc.value.code() == grpc.StatusCode.UNAVAILABLE
    assert started() == before, "a call without a certificate reached the service"


@pytest.mark.asyncio(loop_scope="module")
async def test_a_plaintext_call_with_a_valid_token_is_not_served(ports):
    before = started()
    token = mint_token(b"s" * 32, "operator")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{ports['who']}") as ch:
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await connects_pb2_grpc.ConnectsServiceStub(ch).GetBalance(
                connects_pb2.GetBalanceRequest(account_id="a"), metadata=(("authorization", f"Bearer {token}"),),
                timeout=5)
    assert exc.value.code() == grpc.StatusCode.UNAVAILABLE
    assert started() == before


@pytest.mark.asyncio(loop_scope="module")
async def test_a_certificate_from_another_ca_fails_the_handshake(ports, pki):
    before = started()
    # Another CA's "marketplace", trusting our server's CA (so only the client side is foreign).
    foreign = TlsFiles(str(pki["other"] / "marketplace.crt"), str(pki["other"] / "marketplace.key"),
                       str(pki["dev"] / "ca.crt"))
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await get_balance(ports["who"], foreign)
    assert exc.value.code() == grpc.StatusCode.UNAVAILABLE
    assert started() == before


@pytest.mark.asyncio(loop_scope="module")
async def test_a_client_that_trusts_another_ca_refuses_our_server(ports, pki):
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await get_balance(ports["who"], as_caller(pki, "marketplace", ca="other"))
    assert exc.value.code() == grpc.StatusCode.UNAVAILABLE


@pytest.mark.asyncio(loop_scope="module")
async def test_the_wrong_service_is_permission_denied_and_counted(ports, pki):
    labels = {"grpc_type": "unary", "grpc_service": CONNECTS, "grpc_method": "ReverseCredit",
              "grpc_code": "PermissionDenied"}
    before = metric("grpc_server_handled_total", **labels)
    async with channel(f"127.0.0.1:{ports['connects']}", caller="ads", tls=as_caller(pki, "ads")) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await connects_pb2_grpc.ConnectsServiceStub(ch).ReverseCredit(connects_pb2.ReverseCreditRequest(),
                                                                            timeout=5)
    assert exc.value.code() == grpc.StatusCode.PERMISSION_DENIED
    info = error_info(exc.value)
    assert (info.reason, info.metadata["caller"], info.metadata["method"]) == (
        "CALLER_NOT_ALLOWED", "ads", "ReverseCredit")
    assert metric("grpc_server_handled_total", **labels) == before + 1


@pytest.mark.asyncio(loop_scope="module")
async def test_under_mtls_a_bearer_token_does_not_change_who_the_caller_is(ports, pki):
    token = mint_token(b"s" * 32, "operator")
    reply = await get_balance(ports["who"], as_caller(pki, "marketplace"),
                              metadata=(("authorization", f"Bearer {token}"),))
    assert reply.account_id == "marketplace"


@pytest.mark.asyncio(loop_scope="module")
async def test_a_certificate_without_spiffe_id_names_its_cn(ports, pki):
    assert (await get_balance(ports["who"], as_caller(pki, "cn-only"))).account_id == "operator"


@pytest.mark.asyncio(loop_scope="module")
async def test_a_spiffe_id_from_another_trust_domain_is_unauthenticated(ports, pki):
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await get_balance(ports["who"], as_caller(pki, "foreign-domain"))
    assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_info(exc.value).reason == "UNKNOWN_PEER_IDENTITY"


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(("name", "method"), CASES, ids=[f"{n}.{m}" for n, m in CASES])
async def test_each_method_over_mtls_lets_its_callers_through_and_denies_every_other(ports, pki, name, method):
    descriptor = SERVICES[name][0]
    request_type = GetMessageClass(descriptor.methods_by_name[method].input_type)
    allowed = expected_callers(name, method)
    callers = [c for c in CALLERS if c != "stranger"]  # stranger: no certificate exists, see the handshake tests
    for caller in callers:
        async with channel(f"127.0.0.1:{ports[name]}", caller=caller, tls=as_caller(pki, caller)) as ch:
            call = ch.unary_unary(f"/{descriptor.full_name}/{method}",
                                  request_serializer=lambda m: m.SerializeToString(), response_deserializer=None)
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                await call(request_type(), timeout=5)
        check_answer(exc.value, caller=caller, method=method, allowed=allowed)


@pytest.mark.asyncio(loop_scope="module")
async def test_outgoing_calls_present_the_service_certificate(ports, pki):
    """ads' and billing's connects client (GrpcConnectsClient with the service's TlsFiles, as bootstrap wires it)."""
    def who_am_i(service: str) -> str:  # blocking, as the services' workers call it: off the server's loop
        config = tls_config(service, pki["dev"])
        client = GrpcConnectsClient(f"127.0.0.1:{ports['who']}", secret=None, caller=service, tls=config.tls)
        try:
            return str(client._stub.GetBalance(connects_pb2.GetBalanceRequest(account_id="a"), timeout=5).account_id)
        finally:
            client.close()

    for service in ("ads", "billing"):
        assert await asyncio.to_thread(who_am_i, service) == service


@pytest.mark.asyncio(loop_scope="module")
async def test_tool_credentials_call_as_each_identity(ports, pki):
    creds = CallerCredentials.from_env({"ADSMON_TLS_DIR": str(pki["dev"])})
    assert creds.transport == "tls" and creds.metadata("operator") == ()
    target = f"127.0.0.1:{ports['who']}"

    def who(ch: grpc.Channel) -> str:
        with ch:
            return str(connects_pb2_grpc.ConnectsServiceStub(ch).GetBalance(
                connects_pb2.GetBalanceRequest(account_id="a"), timeout=5).account_id)

    assert await asyncio.to_thread(who, creds.channel(target, "operator")) == "operator"
    assert await asyncio.to_thread(who, sync_channel(target, caller="billing", tls=as_caller(pki, "billing"))) == (
        "billing")


# --- configuration: tls by default, plaintext only when asked for --------------------------------------------

def test_tls_is_the_default_and_without_certificates_the_config_is_refused():
    with pytest.raises(ConfigError, match=r"no TLS certificate for connects.*ADSMON_TRANSPORT=plaintext"):
        ServiceConfig.from_env("connects", grpc_port=1, metrics_port=2, environ={"ADSMON_AUTH_SECRET": "s" * 32})


def test_plaintext_must_be_explicit_and_keeps_bearer_tokens():
    cfg = ServiceConfig.from_env("connects", grpc_port=1, metrics_port=2,
                                 environ={"ADSMON_AUTH_SECRET": "s" * 32, "ADSMON_TRANSPORT": "plaintext"})
    assert (cfg.transport, cfg.tls) == ("plaintext", None)


def test_per_service_files_win_over_the_directory(pki, tmp_path):
    dev = pki["dev"]
    cfg = tls_config("billing", dev, ADSMON_BILLING_TLS_CERT_FILE=str(dev / "operator.crt"),
                     ADSMON_BILLING_TLS_KEY_FILE=str(dev / "operator.key"))
    assert cfg.tls == TlsFiles(str(dev / "operator.crt"), str(dev / "operator.key"), str(dev / "ca.crt"))
    with pytest.raises(ConfigError, match="missing ADSMON_ADS_TLS_KEY_FILE, ADSMON_ADS_TLS_CA_FILE"):
        ServiceConfig.from_env("ads", grpc_port=1, metrics_port=2, environ={
            "ADSMON_AUTH_SECRET": "s" * 32, "ADSMON_TLS_CERT_FILE": str(dev / "ads.crt")})
    with pytest.raises(StartupError, match="cannot read the TLS certificate"):
        tls_config("ads", tmp_path)
    with pytest.raises(ConfigError, match="ADSMON_TRANSPORT='tcp' is not one of tls, plaintext"):
        ServiceConfig.from_env("ads", grpc_port=1, metrics_port=2,
                               environ={"ADSMON_AUTH_SECRET": "s" * 32, "ADSMON_TRANSPORT": "tcp"})


@pytest.mark.parametrize(("env", "message"), [
    ({}, "no TLS certificate for connects"),
    ({"ADSMON_TLS_DIR": "/nonexistent"}, "cannot read the TLS certificate file /nonexistent/connects.crt"),
], ids=["neither", "missing-files"])
def test_a_service_without_tls_files_or_explicit_plaintext_exits_2_with_one_line(env, message):
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ADSMON_")}
    environ.update({"ADSMON_AUTH_SECRET": "s" * 32, "ADSMON_CONNECTS_DATABASE_URL": "sqlite://", **env})
    proc = subprocess.run([sys.executable, "-m", "services.connects"], cwd=ROOT, env=environ, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("connects: cannot start: ") and message in lines[0], lines
