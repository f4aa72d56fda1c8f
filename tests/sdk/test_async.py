"""The async SDK against a live server (driven with asyncio.run; no plugin needed)."""

from __future__ import annotations

import asyncio

import pytest

from cellbox.sdk import AsyncSandbox, AsyncSandboxClient, SandboxNotFoundError

pytestmark = pytest.mark.root


def test_async_basic_flow(live_server, tracker, tmp_path):
    async def flow() -> str:
        async with await AsyncSandbox.create(memory_mb=512, api_url=live_server.api_url) as sbx:
            tracker.add(sbx.id)
            res = await sbx.run("sh", ["-c", "echo $X"], env={"X": "async"})
            assert (res.exit_code, res.stdout) == (0, "async")
            proc = await sbx.start_process("sh", ["-c", "for i in 1 2 3; do echo $i; sleep 0.1; done"])
            assert [line async for line in proc.follow_output()] == ["1", "2", "3"]
            assert await proc.wait(timeout=30) == 0
            await sbx.write_file("/tmp/a.txt", b"abc")
            assert await sbx.read_file("/tmp/a.txt") == b"abc"
            (tmp_path / "up.txt").write_bytes(b"x" * 100_000)
            await sbx.upload_file(tmp_path / "up.txt", "/tmp/up.txt")
            await sbx.download_file("/tmp/up.txt", tmp_path / "down.txt")
            assert (tmp_path / "down.txt").read_bytes() == b"x" * 100_000
            # Several commands at once on one sandbox.
            results = await asyncio.gather(*(sbx.run("echo", [str(i)]) for i in range(5)))
            assert [r.stdout for r in results] == [str(i) for i in range(5)]
            return sbx.id

    sandbox_id = asyncio.run(flow())

    async def after() -> str:
        async with AsyncSandboxClient(live_server.api_url) as client:
            try:
                return (await client.get(sandbox_id)).status
            except SandboxNotFoundError:
                return "gone"

    assert asyncio.run(after()) in ("terminated", "gone")
