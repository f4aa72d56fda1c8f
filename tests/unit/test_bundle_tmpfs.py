"""tmpfs in a sandbox can never fill its memory limit (runtime/bundle.py)."""

from __future__ import annotations

from cellbox.runtime import bundle


def _sizes(tmp_path, memory_mb: int) -> dict[str, int]:
    cfg = bundle.config(hostname="h", rootfs=tmp_path, agentfs_tree=tmp_path, netns_path="/run/netns/x",
                        cgroups_path="/cellbox/x", limits=bundle.Limits(1, memory_mb), agent_port=9501)
    out = {}
    for m in cfg["mounts"]:
        if m["type"] == "tmpfs":
            size = next(o for o in m.get("options", []) if o.startswith("size="))
            out[m["destination"]] = int(size[5:-1])
    return out


def test_tmpfs_sized_from_memory(tmp_path):
    for memory_mb in (64, 100, 128, 256, 1024, 8192):
        sizes = _sizes(tmp_path, memory_mb)
        assert sum(sizes.values()) <= memory_mb * 1024 // 4 + bundle.DEV_TMPFS_KIB, (memory_mb, sizes)
    assert _sizes(tmp_path, 64)["/dev/shm"] == 16 * 1024
    assert _sizes(tmp_path, bundle.SHM_FULL_AT_MB)["/dev/shm"] == 64 * 1024  # Docker's size from 256 MiB
    assert _sizes(tmp_path, 8192)["/dev/shm"] == 64 * 1024
