"""``Sandbox.get_or_create`` (issue 14 item 9): one name, one sandbox, made on first
use, found after, resumed when suspended, and one winner when callers race."""

from __future__ import annotations

import concurrent.futures
import secrets

from cellbox.sdk import Sandbox

from .live_server import LiveServer, Tracker


def test_get_or_create_makes_finds_and_resumes(live_server: LiveServer, tracker: Tracker):
    name = f"goc-{secrets.token_hex(3)}"
    first = Sandbox.get_or_create(name, api_url=live_server.api_url, memory_mb=512)
    tracker.add(first.id)
    try:
        assert first.name == name and first.status == "running"
        again = Sandbox.get_or_create(name, api_url=live_server.api_url, memory_mb=512)
        assert again.id == first.id
        again.close()
        first.suspend()
        woken = Sandbox.get_or_create(name, api_url=live_server.api_url)
        assert woken.id == first.id and woken.status == "running"
        woken.close()
    finally:
        first.close()


def test_racing_callers_get_one_sandbox(live_server: LiveServer, tracker: Tracker):
    name = f"goc-race-{secrets.token_hex(3)}"

    def one(_: int) -> str:
        sbx = Sandbox.get_or_create(name, api_url=live_server.api_url, memory_mb=512)
        try:
            return sbx.id
        finally:
            sbx.close()

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        got = list(pool.map(one, range(4)))
    for sid in set(got):
        tracker.add(sid)
    assert len(set(got)) == 1, got
