"""Fixtures of the proxy end-to-end tests (the harness itself is in `proxy_harness.py`)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# The test modules import the harness by name (pytest runs with --import-mode=importlib).
sys.path.append(str(Path(__file__).resolve().parent))

from proxy_harness import (
    Certs,
    ProxyProcess,
    Upstreams,
    make_certs,
    run_upstreams,
    start_proxy,
)
from registry_harness import RegistryProcess, new_registry


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="session")
def upstreams(certs: Certs) -> Iterator[Upstreams]:
    with run_upstreams(certs) as ups:
        yield ups


@pytest.fixture(scope="module")
def proxy(
    tmp_path_factory: pytest.TempPathFactory,
    certs: Certs,
    upstreams: Upstreams,
) -> Iterator[ProxyProcess]:
    """One enforcing proxy per test module."""
    p = start_proxy(tmp_path_factory.mktemp("proxy"), certs, upstreams)
    yield p
    p.stop()


@pytest.fixture(scope="module")
def admin_registry(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[RegistryProcess, dict[str, str]]]:
    """A `sharewall registry serve` per test module, with a token per role, admin included."""
    reg, tokens = new_registry(
        tmp_path_factory.mktemp("registry"), roles=("proxy", "security", "engineer", "admin")
    )
    yield reg, tokens
    reg.stop()
