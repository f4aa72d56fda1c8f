"""Fixtures shared by the integration tests that need an outside world."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ..nettest.internet import DNS, Internet


@pytest.fixture
def internet(tmp_path, manager, loop_thread) -> Iterator[Internet]:
    """The test "internet" (tests/nettest/internet.py), with our resolver pointed at it."""
    net = Internet(tmp_path)
    manager.dns_upstreams = [DNS]
    try:
        yield net
    finally:
        manager.dns_upstreams = None
        net.close()
