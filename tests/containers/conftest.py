"""Fixtures for the tests that only make sense against `make test-containers`' stack."""

from __future__ import annotations

import pytest

from tests.support import container_stack


@pytest.fixture(scope="session")
def stack() -> dict[str, container_stack.ContainerService]:
    return container_stack.services()
