"""Tensorlake's sandbox file-system calls through the real SDK (0.5.163), on cellbox volumes.

Served: ``Sandbox.create(file_systems=[FileSystemMount])``, ``attach_file_system``,
``detach_file_system``, ``list_file_systems``/``SandboxInfo.file_systems``. Not served:
``FilesystemClient`` (Tensorlake's cloud Artifact Storage protocol); the volume itself
is made through cellbox's ``/volumes`` here, and the SDK's client gets a plain 404.
"""

from __future__ import annotations

import secrets

import httpx
import pytest

from ..keys import auth

pytest.importorskip("tensorlake.sandbox")
from tensorlake.sandbox import FileSystemMount  # noqa: E402
from tensorlake.sandbox.exceptions import SandboxError  # noqa: E402

pytestmark = pytest.mark.root


@pytest.fixture
def volume(live_server, made):
    name = f"tlvol-{secrets.token_hex(3)}"
    r = httpx.post(f"{live_server.api_url}/volumes", json={"name": name, "size_mb": 64}, headers=auth(), timeout=60)
    assert r.status_code == 201, r.text
    yield name
    made.cleanup()  # first: a mounted volume cannot be deleted
    r = httpx.delete(f"{live_server.api_url}/volumes/{name}", headers=auth(), timeout=60)
    assert r.status_code == 200, r.text


def test_mount_attach_detach_through_the_sdk(made, volume, live_server):
    writer = made.create(file_systems=[FileSystemMount(file_system_id=volume, mount_path="/mnt/shared")])
    assert writer.run("sh", ["-c", "echo from-writer > /mnt/shared/note"]).exit_code == 0
    mounts = writer.list_file_systems()
    assert [(m.file_system_id, m.mount_path, m.read_only) for m in mounts] == [(volume, "/mnt/shared", False)]

    reader = made.create()
    info = reader.attach_file_system(volume, "/mnt/ro", read_only=True).value
    assert [(m.file_system_id, m.mount_path, m.read_only) for m in info.file_systems] == [(volume, "/mnt/ro", True)]
    assert reader.run("cat", ["/mnt/ro/note"]).stdout.strip() == "from-writer"
    assert reader.run("sh", ["-c", "echo x > /mnt/ro/y"]).exit_code != 0
    # A second writer is refused, with the holder named.
    with pytest.raises(SandboxError) as err:
        reader.attach_file_system(volume, "/mnt/rw")
    assert writer.sandbox_id in str(err.value)
    # An unknown version of it: refused (the SDK itself refuses a writable pin).
    with pytest.raises(SandboxError):
        reader.attach_file_system(volume, "/mnt/pin", snapshot_id="nosuchversion", read_only=True)
    assert reader.detach_file_system("/mnt/ro").value.file_systems == []
    assert reader.run("sh", ["-c", "test -e /mnt/ro/note || echo gone"]).stdout.strip() == "gone"


def test_filesystem_client_is_refused_clearly(live_server):
    """The SDK's Artifact Storage client (its first call mints a storage token) gets a
    400 NOT_SUPPORTED naming what to use instead (no hang, no 500, no bare 404)."""
    from tensorlake.filesystem import FilesystemClient
    from tensorlake.filesystem.exceptions import FilesystemAPIError

    from ..keys import admin_key

    client = FilesystemClient(api_key=admin_key(), api_url=live_server.api_url)
    for call in (lambda: client.create("nope"), client.list, lambda: client.fork("a", "b")):
        with pytest.raises(FilesystemAPIError) as err:
            call()
        assert err.value.status_code == 400 and "NOT_SUPPORTED" in str(err.value), err.value
        assert "volumes" in str(err.value)
    # A key is still needed to learn even that.
    anon = FilesystemClient(api_key="unused", api_url=live_server.api_url)
    with pytest.raises(FilesystemAPIError) as err:
        anon.list()
    assert err.value.status_code == 401
