"""Server stop and start: running sandboxes are re-adopted, crash leftovers reconciled."""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path

import httpx
import pytest

from cellbox import ids
from cellbox.manager.records import SandboxRecord, Status
from cellbox.manager.store import Store

from .conftest import Api, agent_ip
from ..keys import auth

pytestmark = pytest.mark.root

DEAD_OWNER = "999999999:0"  # no such PID: the creator of these records is gone


def _fake_record(status: Status, **kwargs) -> SandboxRecord:
    return SandboxRecord(
        id=ids.new_id(), namespace="default", image="cellbox/debian", cpus=1.0, memory_mb=256, disk_mb=1024,
        status=status, owner=DEAD_OWNER, **kwargs,
    )


def _netns(name: str) -> bool:
    return Path("/run/netns", name).exists()


def test_restart_readopts_running_and_reconciles_leftovers(api: Api, settings):
    server = api.server
    name = f"restart-keep-{secrets.token_hex(3)}"
    running = api.create({"name": name})["sandbox_id"]
    doomed = api.create({})["sandbox_id"]
    ip = agent_ip(settings, running)

    # A pending record whose create was cut short (a netns and a state dir made), a
    # running record whose container is gone, and a netns nobody records.
    pending = _fake_record(Status.PENDING)
    lost = _fake_record(Status.RUNNING)
    orphan = ids.new_id()
    store = Store(settings.db_path)
    try:
        assert server.stop() == 0
        # While the server is down, the doomed sandbox's container dies.
        subprocess.run(["runc", "--root", str(settings.runc_root), "kill", doomed, "KILL"], check=True)
        for rec in (pending, lost):
            store.insert(rec)
        subprocess.run(["ip", "netns", "add", ids.netns(pending.id)], check=True)
        subprocess.run(["ip", "netns", "add", ids.netns(orphan)], check=True)
        (settings.sandboxes_dir / pending.id).mkdir(parents=True)

        # The sandbox outlived the server.
        assert httpx.get(f"http://{ip}:9501/api/v1/health", timeout=10).status_code == 200
    finally:
        server.start()
        store.close()

    info = api.get(name)
    assert info["id"] == running and info["status"] == "running"
    assert info["sandbox_url"] == server.proxy_url
    assert httpx.get(f"http://{ip}:9501/api/v1/health", timeout=10).json() == {"healthy": True}
    via_proxy = httpx.get(f"http://127.0.0.1:{server.proxy_port}/api/v1/health",
                          headers={"Host": f"{name}.local", **auth()}, timeout=10)
    assert via_proxy.json() == {"healthy": True}

    gone = api.get(doomed)
    assert gone["status"] == "failed" and gone["termination_reason"] in ("exited", "oom_killed")

    p = api.get(pending.id)
    assert p["status"] == "failed" and p["termination_reason"] == "startup_interrupted"
    assert p["error_details"]["message"]
    assert not _netns(ids.netns(pending.id)) and not (settings.sandboxes_dir / pending.id).exists()
    assert api.get(lost.id)["status"] == "failed"
    assert not _netns(ids.netns(orphan))

    # The re-adopted sandbox is fully manageable.
    assert api.request("PATCH", f"/sandboxes/{running}", json={"exposed_ports": [8000]}).status_code == 200
    assert api.delete(running).status_code == 200
    assert api.get(running)["status"] == "terminated"
