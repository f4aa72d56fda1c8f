"""Attacks on volumes, from a tenant inside a sandbox and from a client of the real server.

A volume is written by one tenant and read by others and by the host (versions, forks,
deletes), so whatever a writer plants in it must not reach outside it; and the mount
paths a client names, or a tenant re-points, must never put a volume anywhere but
where the sandbox's own root says.
"""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest

from ..api.conftest import SDK_CREATE_HEADERS, Api, api, server  # noqa: F401
from ..api.test_volumes import Vols, attach, mount, sh, unique, vols  # noqa: F401

pytestmark = pytest.mark.root


def test_links_a_writer_plants_stay_inside(api: Api, vols: Vols, settings):
    host_files = {p: Path(p).read_bytes() for p in ("/etc/hostname", "/etc/resolv.conf")}
    v = vols.create()
    writer = api.create({"file_systems": [mount(v["name"], "/data")]})["sandbox_id"]
    plant = ("cd /data && ln -s /etc etc && ln -s /proc/1/root hostroot && ln -s ../../../../../../etc/hostname up "
             "&& mkfifo fifo && mkdir -p deep && ln -s / deep/root && echo planted")
    assert sh(settings, writer, plant)["out"] == "planted"
    # The host's operations on it: none walks the tree, none blocks on the FIFO.
    r = api.request("POST", f"/volumes/{v['name']}/snapshots", json={})
    assert r.status_code == 201, r.text
    ver = r.json()["snapshot_id"]
    fork = vols.fork(v["name"], snapshot_id=ver)
    assert api.request("GET", f"/volumes/{fork['name']}").status_code == 200
    # A reader follows the links inside its own sandbox: its own files, never the host's.
    reader = api.create({"file_systems": [mount(v["name"], "/v", read_only=True),
                                          mount(v["name"], "/old", snapshot_id=ver, read_only=True)]})["sandbox_id"]
    res = sh(settings, reader, "cat /v/etc/hostname /v/up /old/deep/root/etc/hostname; ls /v/hostroot/ >/dev/null")
    assert res["out"].split() == [reader] * 3, res
    assert sh(settings, reader, "cat /etc/hostname")["out"] == reader
    assert {p: Path(p).read_bytes() for p in host_files} == host_files
    assert socket.gethostname() != reader
    # Deleting takes the links and the FIFO with it, without following them.
    api.delete(reader)
    api.delete(writer)
    assert api.request("DELETE", f"/volumes/{fork['name']}").status_code == 200
    assert api.request("DELETE", f"/volumes/{v['name']}").status_code == 200
    assert not (settings.pool / "volumes" / v["id"]).exists()
    assert {p: Path(p).read_bytes() for p in host_files} == host_files


def test_mount_point_replaced_by_links(api: Api, vols: Vols, settings):
    """The tenant makes the mount path (or a parent) a link to /proc: the volume goes on a
    real directory of its own root, and /proc is left as it was."""
    v = vols.create()
    sid = api.create({})["sandbox_id"]
    assert sh(settings, sid, "ln -s /proc /evil && ln -s /proc /work && mkdir -p /opt && ln -s /proc/self /opt/me "
                             "&& echo ok")["out"] == "ok"
    for path in ("/evil", "/work/sub", "/opt/me/x"):
        r = attach(api, sid, mount(v["name"], path, read_only=True))
        assert r.status_code == 200, (path, r.text)
        res = sh(settings, sid, f"test -L {path} || stat -c %i {path}; grep -c ' {path} .* - btrfs ' /proc/self/mountinfo")
        assert res["out"].split() == ["256", "1"], (path, res)  # the volume's root, on a real directory
        assert api.request("DELETE", f"/sandboxes/{sid}/file_systems", json={"mount_path": path}).status_code == 200
    res = sh(settings, sid, "grep -c ' - proc ' /proc/self/mountinfo; test -r /proc/1/status && echo proc-ok; "
                            "grep ' /proc/' /proc/self/mountinfo | grep -c btrfs")
    assert res["out"].split()[1] == "proc-ok" and res["out"].split()[-1] == "0", res


def test_a_moved_mount_is_never_released(api: Api, vols: Vols, settings):
    """The tenant moves the mount's parent and puts a link where it was: detach refuses
    (it would release the one-writer hold while the tenant still writes through it)."""
    v = vols.create()
    sid = api.create({"file_systems": [mount(v["name"], "/mnt/a/v")]})["sandbox_id"]
    assert sh(settings, sid, "mv /mnt/a /mnt/b && ln -s /proc /mnt/a && echo moved")["out"] == "moved"
    r = api.request("DELETE", f"/sandboxes/{sid}/file_systems", json={"mount_path": "/mnt/a/v"})
    assert r.status_code == 409 and r.json()["code"] == "MOUNT_FAILED", r.text
    assert sh(settings, sid, "echo still > /mnt/b/v/f && cat /mnt/b/v/f")["out"] == "still"
    r = api.request("POST", "/sandboxes", json={"file_systems": [mount(v["name"], "/data")]})
    assert r.status_code == 409 and r.json()["code"] == "VOLUME_IN_USE"
    assert sh(settings, sid, "test -r /proc/1/status && echo proc-ok")["out"] == "proc-ok"


def test_tenant_cannot_remount_or_unmount(api: Api, vols: Vols, settings):
    v = vols.create()
    sid = api.create({"file_systems": [mount(v["name"], "/ro", read_only=True)]})["sandbox_id"]
    code = ("import ctypes,os;l=ctypes.CDLL(None,use_errno=True);"
            "r1=l.mount(b'none',b'/ro',None,32|4096,None);e1=ctypes.get_errno();"  # MS_REMOUNT|MS_BIND, rw
            "r2=l.umount2(b'/ro',2);e2=ctypes.get_errno();"
            "print(r1,os.strerror(e1),r2,os.strerror(e2))")
    res = sh(settings, sid, f"python3 -c \"{code}\"; touch /ro/x 2>&1")
    assert res["out"].startswith("-1 Operation not permitted -1 Operation not permitted"), res
    assert "Read-only file system" in res["out"]


def test_volume_paths_are_root_only_on_the_host(api: Api, vols: Vols, settings):
    v = vols.create()
    sid = api.create({"file_systems": [mount(v["name"], "/data")]})["sandbox_id"]
    assert (settings.pool / "volumes").stat().st_mode & 0o077 == 0
    sdir = settings.data_dir / "volmounts" / sid
    assert sdir.stat().st_mode & 0o007 == 0  # root and the sandbox's own root group only
    api.delete(sid)
    assert not sdir.exists()
    with httpx.Client(timeout=30) as http:  # no key: the door answers first
        assert http.get(f"{api.base}/volumes").status_code == 401


def test_racing_writers_get_one_mount(api: Api, vols: Vols):
    """Four sandboxes ask for the same volume read-write at once: exactly one gets it."""
    import concurrent.futures

    v = vols.create()
    sids = [api.create({})["sandbox_id"] for _ in range(4)]
    with concurrent.futures.ThreadPoolExecutor(len(sids)) as pool:
        codes = list(pool.map(lambda sid: attach(api, sid, mount(v["name"], "/data")).status_code, sids))
    assert sorted(codes) == [200, 409, 409, 409], codes
    held = api.request("GET", f"/volumes/{v['id']}").json()["mounts"]
    assert len(held) == 1 and held[0]["sandbox_id"] == sids[codes.index(200)]
