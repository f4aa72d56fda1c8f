"""cellbox's own SDK for issue 14's calls (resize, logs, archived, pools), sync and
async, against the live server."""

from __future__ import annotations

import asyncio
import time

import pytest

from cellbox.errors import Conflict, InvalidRequest
from cellbox.sdk import AsyncSandboxClient, SandboxClient

from .conftest import SandboxFactory
from .live_server import LiveServer, Tracker

pytestmark = pytest.mark.root


def test_resize_logs_archive(sandboxes: SandboxFactory, live_server: LiveServer):
    sbx = sandboxes.create(entrypoint=["/bin/sh", "-c", "echo one; echo two-needle; exec sleep 600"])
    with SandboxClient(api_url=live_server.api_url) as client:
        info = client.resize(sbx.id, memory_mb=768, cpus=2)
        assert info.memory_mb == 768 and info.cpus == 2
        assert info.raw["resource_resize"]["status"] == "succeeded"
        with pytest.raises(InvalidRequest, match="disk"):
            client.resize(sbx.id, disk_mb=1)
        with pytest.raises(ValueError):
            client.resize(sbx.id)
        deadline = time.monotonic() + 20
        while "two-needle" not in [e["body"] for e in client.logs(sbx.id)]:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert [e["body"] for e in client.logs(sbx.id, body="needle")] == ["two-needle"]
        assert client.logs(sbx.id, levels=["error"]) == []
        procs = client.log_processes(sbx.id)
        shell = next(p for p in procs if p["processCommand"] == "/bin/sh")
        assert len(client.logs(sbx.id, process_ids=[shell["processId"]], head=1)) == 1
        client.delete(sbx.id)
        assert client.get_archived(sbx.id).status == "terminated"
        assert sbx.id in [s.id for s in client.list_archived(limit=20)]


def test_pools_sync_and_async(live_server: LiveServer, tracker: Tracker):
    with SandboxClient(api_url=live_server.api_url) as client:
        pool = client.pools.create("cellbox/debian", memory_mb=1024, warm_containers=1, max_containers=2)
        try:
            assert pool["id"] in [p["id"] for p in client.pools.list()]
            claimed = client.pools.claim(pool["id"])
            tracker.add(claimed.id)
            assert claimed.status == "running" and claimed.raw["pool_id"] == pool["id"]
            with pytest.raises(Conflict):
                client.pools.delete(pool["id"])  # in use
            client.delete(claimed.id)
            assert client.pools.update(pool["id"], "cellbox/debian", memory_mb=640)["resources"]["memory_mb"] == 640

            async def via_async() -> str:
                async with AsyncSandboxClient(api_url=live_server.api_url) as ac:
                    got = await ac.pools.get(pool["id"])
                    return got["id"]

            assert asyncio.run(via_async()) == pool["id"]
        finally:
            client.pools.delete(pool["id"])
