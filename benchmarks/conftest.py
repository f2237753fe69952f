"""Benchmark fixtures: server processes, each started once per session and always killed."""

from __future__ import annotations

import pytest

from benchmarks._servers import ServerPool


@pytest.fixture(scope="session")
def server_pool(request: pytest.FixtureRequest) -> ServerPool:
    """Benchmark servers in separate processes (``pool.get("raw_server.py")``)."""
    pool = ServerPool()
    request.addfinalizer(pool.close)
    return pool
