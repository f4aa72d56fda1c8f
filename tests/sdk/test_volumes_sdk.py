"""``client.volumes`` (sync and async) against a live server."""

from __future__ import annotations

import asyncio
import secrets

import pytest

from cellbox import AsyncSandboxClient, Conflict, SandboxClient, VolumeNotFoundError

pytestmark = pytest.mark.root


def test_volume_lifecycle_sync(live_server, sandboxes):
    name = f"sdkvol-{secrets.token_hex(3)}"
    with SandboxClient(api_url=live_server.api_url) as client:
        vol = client.volumes.create(name, size_mb=32)
        fork = None
        try:
            assert vol.name == name and vol.size_mb == 32 and vol.mounts == []
            sbx = sandboxes.create()
            info = client.volumes.attach(sbx.id, name, "/data")
            assert info.file_systems == [{"file_system_id": name, "mount_path": "/data", "read_only": False}]
            assert sbx.run("sh", ["-c", "echo v1 > /data/f"]).exit_code == 0
            ver = client.volumes.snapshot(name, "one")
            assert [v.snapshot_id for v in client.volumes.snapshots(name)] == [ver.snapshot_id]
            fork = client.volumes.fork(name, f"{name}-f", snapshot_id=ver.snapshot_id)
            assert fork.forked_from == {"volume_id": vol.id, "version_id": ver.snapshot_id}
            got = client.volumes.get(name)
            assert [(m.sandbox_id, m.mount_path) for m in got.mounts] == [(sbx.id, "/data")]
            with pytest.raises(Conflict):
                client.volumes.delete(name)
            assert client.volumes.detach(sbx.id, "/data").file_systems == []
        finally:
            if fork is not None:
                client.volumes.delete(fork.name)
            client.volumes.delete(name)
        with pytest.raises(VolumeNotFoundError):
            client.volumes.get(name)
        assert name not in [v.name for v in client.volumes.list()]


def test_volume_lifecycle_async(live_server):
    name = f"sdkavol-{secrets.token_hex(3)}"

    async def flow() -> list[str]:
        async with AsyncSandboxClient(api_url=live_server.api_url) as client:
            await client.volumes.create(name)
            try:
                return [v.name for v in await client.volumes.list()]
            finally:
                await client.volumes.delete(name)

    assert name in asyncio.run(flow())
