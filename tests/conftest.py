"""Shared fixtures: the wire engine under test, fresh configurations, temporary storage."""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from types import ModuleType

import pytest

from pyroact.configuration import Config

ENGINES = ("fast", "pure")


def load_engine(name: str) -> ModuleType:
    """Import one wire engine by fixture name, skipping (or failing in CI) if it is not built."""
    if name == "pure":
        return importlib.import_module("pyroact._purewire")
    try:
        return importlib.import_module("pyroact._fastwire")
    except ImportError:
        if os.environ.get("PYROACT_REQUIRE_FASTWIRE"):
            pytest.fail("PYROACT_REQUIRE_FASTWIRE=1 but pyroact._fastwire is not built")
        pytest.skip("pyroact._fastwire is not built")


@pytest.fixture(params=ENGINES)
def wire(request: pytest.FixtureRequest) -> ModuleType:
    """Each wire engine in turn: every codec test runs against both."""
    return load_engine(request.param)


@pytest.fixture
def config(tmp_path: object) -> Iterator[Config]:
    """A fresh configuration that reads no environment, with storage in a temporary folder."""
    cfg = Config(read_environment=False)
    cfg.PYRO_STORAGE = str(tmp_path)
    yield cfg


# -- remote-object tests ---------------------------------------------------------------------


@pytest.fixture(params=("single", "threaded"))
def server_mode(request: pytest.FixtureRequest) -> str:
    """Each server mode in turn: ``"single"`` and ``"threaded"``."""
    return str(request.param)


@pytest.fixture
def daemon(server_mode: str) -> Iterator[object]:
    """A Daemon in ``server_mode`` whose request loop runs in a background thread."""
    from helpers import serving

    with serving(server_mode) as d:
        yield d
