"""Issue 14's parity items through the unmodified tensorlake 0.5.163 client.

Each of these calls was a 404 or a 400 ``NOT_SUPPORTED`` against cellbox before.
"""

from __future__ import annotations

import pytest
from tensorlake.sandbox import PoolNotFoundError

pytestmark = pytest.mark.root


def test_live_resize_through_update_and_wait(made, client):
    sbx = made.create(memory_mb=512, cpus=1)
    proc = sbx.start_process("sleep", ["600"])
    info = sbx.update(memory_mb=768, cpus=2)  # PATCH resources, then polls its generation
    assert info.resources.memory_mb == 768 and info.resources.cpus == 2
    assert info.resource_resize is not None and info.resource_resize.status == "succeeded"
    gen = info.resource_resize.generation
    again = client.wait_for_resource_resize(sbx.sandbox_id, gen, timeout=30)
    assert again.resources.memory_mb == 768
    assert sbx.get_process(proc.pid).status == "running"  # resized in place, not restarted
    # The server's refusal reaches the caller unchanged.
    with pytest.raises(Exception) as err:
        sbx.update(disk_mb=1)
    assert "disk" in str(err.value)


def test_pools_create_claim_update_delete(made, client, live_server):
    pool = client.create_pool(image="cellbox/debian", cpus=1, memory_mb=1024, warm_containers=1, max_containers=3)
    try:
        assert pool.namespace == "default"
        assert pool.pool_id in [p.pool_id for p in client.list_pools()]
        info = client.get_pool(pool.pool_id)
        assert info.image == "cellbox/debian" and info.warm_containers == 1 and info.resources.memory_mb == 1024
        claimed = client.claim(pool.pool_id)
        made.ids.append(claimed.sandbox_id)
        assert claimed.status == "running"
        sbx = client.connect(claimed.sandbox_id)
        assert sbx.run("echo", ["from-pool"]).stdout.strip() == "from-pool"
        assert client.get(claimed.sandbox_id).pool_id == pool.pool_id
        # Sandbox.create(pool_id=...) is a claim too.
        from tensorlake.sandbox import Sandbox

        second = Sandbox.create(api_url=live_server.api_url.replace("127.0.0.1", "localhost"), pool_id=pool.pool_id)
        made.ids.append(second.sandbox_id)
        assert second.run("echo", ["second"]).stdout.strip() == "second"
        client.delete(second.sandbox_id)
        updated = client.update_pool(pool.pool_id, image="cellbox/debian", memory_mb=768, warm_containers=0)
        assert updated.resources.memory_mb == 768
        client.delete(claimed.sandbox_id)
    finally:
        client.delete_pool(pool.pool_id)
    with pytest.raises(PoolNotFoundError):
        client.get_pool(pool.pool_id)


def test_logs_processes_and_archive(made, client):
    sbx = made.create(image="tensorlake/ubuntu-minimal", entrypoint=["/bin/sh", "-c",
                                                                     "echo alpha; echo beta-needle; exec sleep 600"])
    import time

    deadline = time.monotonic() + 20
    while "beta-needle" not in [e.body for e in client.get_logs(sbx.sandbox_id).logs]:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    found = client.get_logs(sbx.sandbox_id, body="needle", levels=["info"])
    assert [e.body for e in found.logs] == ["beta-needle"]
    assert client.get_logs(sbx.sandbox_id, levels=["error"]).logs == []
    procs = client.list_log_processes(sbx.sandbox_id).processes
    shell = next(p for p in procs if p.process_command == "/bin/sh")
    only = client.get_logs(sbx.sandbox_id, process_ids=[shell.process_id])
    assert [e.body for e in only.logs][-2:] == ["alpha", "beta-needle"]
    client.delete(sbx.sandbox_id)
    archived = client.get_archived(sbx.sandbox_id)
    assert archived.archived_at and archived.status == "terminated"
    assert sbx.sandbox_id in [s.sandbox_id for s in client.list_archived(limit=50).sandboxes]
    assert "beta-needle" in [e.body for e in client.get_logs(sbx.sandbox_id).logs]  # kept past the end
