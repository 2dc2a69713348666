"""Fixtures shared by every test tier.

Integration and e2e tests use the real PostgreSQL and Kafka that `make test`
starts (settings in .local/env, exported by the Makefile). A missing piece of
infrastructure fails the test with a clear message; nothing is skipped.
"""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
import sqlalchemy as sa
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from prometheus_client import REGISTRY
from sqlalchemy.engine import make_url

from tests.support import container_stack
from tests.support.scratch_db import drop_database

ROOT = Path(__file__).resolve().parent.parent


def _load_local_env() -> None:
    """Let `pytest` run directly (not via make) once `make infra` has written .local/env."""
    env_file = ROOT / ".local" / "env"
    if env_file.is_file():
        for line in env_file.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep and key.startswith("ADSMON_"):
                os.environ.setdefault(key.strip(), value.strip())
    secret = ROOT / ".local" / "secrets" / "auth_secret"
    if secret.is_file():
        os.environ.setdefault("ADSMON_AUTH_SECRET_FILE", str(secret))


_load_local_env()
# The services' own processes and servers in these tests talk plaintext (bearer tokens, as the real callers),
# said explicitly as a local run must; mutual TLS has its own tests (tests/unit/kit/test_mtls.py, the chaos
# suite, `make run`'s supervisor test), which set ADSMON_TRANSPORT themselves.
os.environ.setdefault("ADSMON_TRANSPORT", "plaintext")
# tests/containers/ run only against `make test-containers`' stack (ADSMON_TEST_STACK).
collect_ignore = [] if container_stack.description() is not None else ["containers"]
# Consumer groups of this test run are its own: concurrent runs on one broker never steal each other's records.
# Its topics too: a fresh consumer group reads from the earliest offset, and a long-lived local broker's
# topics hold every earlier run's (and benchmark's) events.
_RUN = uuid.uuid4().hex[:8]
os.environ.setdefault("ADSMON_KAFKA_GROUP_PREFIX", f"test-{_RUN}-")
os.environ.setdefault("ADSMON_KAFKA_TOPIC_PREFIX", f"test-{_RUN}.")


def require_env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: start the infrastructure with `make infra` (make test does it)")
    return value


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    return require_env("ADSMON_KAFKA_BOOTSTRAP")


@pytest.fixture(scope="session")
def auth_secret() -> bytes:
    if container_stack.description() is not None:  # `make test-containers`: the containers' secret
        return container_stack.auth_secret()
    return secrets.token_hex(32).encode()


@pytest.fixture(scope="session")
def create_database() -> Iterator[Callable[[str], str]]:
    """Factory: a fresh, empty PostgreSQL database per call; all dropped at session end."""
    admin_url = make_url(require_env("ADSMON_ADMIN_DATABASE_URL"))
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT", pool_size=1)
    created: list[str] = []

    def create(prefix: str) -> str:
        assert prefix.isidentifier() and prefix.islower(), "prefix becomes part of an identifier"
        name = f"t_{prefix}_{uuid.uuid4().hex[:10]}"
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        created.append(name)
        return admin_url.set(database=name).render_as_string(hide_password=False)

    yield create
    with admin.connect() as conn:
        for name in created:
            drop_database(conn, name)
    admin.dispose()


def unique(prefix: str) -> str:
    """A random id so tests never collide with each other or with earlier runs."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def metric(name: str, **labels: str) -> float:
    """A sample of the default Prometheus registry (0 when the series does not exist yet)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def error_info(exc: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    """The ErrorInfo of a refused call, which must carry a google.rpc.Status."""
    status = rpc_status.from_call(exc)
    assert status is not None, f"no rich status on {exc.code()}: {exc.details()}"
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    return info
