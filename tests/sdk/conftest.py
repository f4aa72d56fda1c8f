"""Fixtures for the SDK tests: a live server, and sandboxes deleted at teardown."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from cellbox.sdk import Sandbox

from .live_server import LiveServer, Tracker
from .live_server import live_server, tracker  # noqa: F401 (fixtures)


class SandboxFactory:
    def __init__(self, server: LiveServer, tracker: Tracker) -> None:
        self.server, self.tracker = server, tracker
        self.handles: list[Sandbox] = []

    def create(self, **kwargs: Any) -> Sandbox:
        kwargs.setdefault("memory_mb", 512)
        sbx = Sandbox.create(api_url=self.server.api_url, **kwargs)
        self.tracker.add(sbx.id)
        self.handles.append(sbx)
        return sbx

    def close(self) -> None:
        for h in self.handles:
            h.close()


@pytest.fixture
def sandboxes(live_server: LiveServer, tracker: Tracker) -> Iterator[SandboxFactory]:
    factory = SandboxFactory(live_server, tracker)
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture
def sbx(sandboxes: SandboxFactory) -> Sandbox:
    """One fresh sandbox for the test."""
    return sandboxes.create()
