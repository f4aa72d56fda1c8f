"""Compatibility with the real ``tensorlake`` SDK (pinned in pyproject's test extra).

The client is driven unmodified in localhost mode against a real ``cellbox server``
(the one tests/sdk and tests/cli share). Sandboxes are deleted at teardown.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from ..sdk.live_server import LiveServer
from ..sdk.live_server import live_server  # noqa: F401 (fixtures)
from ..keys import admin_key, auth

# The tensorlake SDK reads TENSORLAKE_API_KEY once, when it is imported.
os.environ.setdefault("TENSORLAKE_API_KEY", admin_key())
tensorlake_sandbox = pytest.importorskip("tensorlake.sandbox")


class Made:
    def __init__(self, server: LiveServer) -> None:
        self.server = server
        self.ids: list[str] = []

    def create(self, **kwargs: Any):
        kwargs.setdefault("memory_mb", 512)
        sbx = tensorlake_sandbox.Sandbox.create(api_url=self.server.api_url.replace("127.0.0.1", "localhost"), **kwargs)
        self.ids.append(sbx.sandbox_id)
        return sbx

    def cleanup(self) -> None:
        for sid in self.ids:
            httpx.delete(f"{self.server.api_url}/sandboxes/{sid}", timeout=60, headers=auth())


@pytest.fixture
def made(live_server: LiveServer) -> Iterator[Made]:
    m = Made(live_server)
    try:
        yield m
    finally:
        m.cleanup()


@pytest.fixture
def client(live_server: LiveServer):
    c = tensorlake_sandbox.SandboxClient.for_localhost(api_url=live_server.api_url.replace("127.0.0.1", "localhost"))
    try:
        yield c
    finally:
        c.close()


# -- E2B compat table (tests/compat/e2b_table.py) ----------------------------------------
from . import e2b_table  # noqa: E402
from .e2b_env import e2b_env  # noqa: E402,F401  (fixture for test_e2b_*.py)

# -- tensorlake compat table (tests/compat/tl_table.py): only in `make compat-tensorlake` --
from . import tl_table  # noqa: E402

if tl_table.enabled():
    tl_table.instrument()  # before the test modules import the SDK's names


def pytest_runtest_setup(item: pytest.Item) -> None:
    tl_table.start(item)


def pytest_configure(config: pytest.Config) -> None:
    e2b_table.configure(config)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    e2b_table.record(item, outcome.get_result())
    tl_table.record(item, outcome.get_result())


def pytest_sessionfinish(session: pytest.Session) -> None:
    e2b_table.write(session)
    tl_table.write()
