"""The examples run against the shared live server (tests/sdk/live_server.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ..sdk.live_server import LiveServer, acquire, release


@pytest.fixture(scope="session")
def live_server() -> Iterator[LiveServer]:
    server = acquire()
    try:
        yield server
    finally:
        release()
