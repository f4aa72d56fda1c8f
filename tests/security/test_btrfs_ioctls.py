"""A tenant cannot make, snapshot or delete btrfs subvolumes inside its sandbox.

Its rootfs is a btrfs subvolume, and ``BTRFS_IOC_SUBVOL_CREATE`` needs no capability,
only write access to a directory. A subvolume made inside the tree is outside the
sandbox's quota group: measured before this fix, a sandbox with ``disk_mb=400`` that
hit EDQUOT at 107 MiB in its own tree wrote 500 MiB into a subvolume of its own (one
tenant could fill the pool), and such subvolumes were silently missing from its
snapshots and clones. The seccomp profile refuses the subvolume ioctls (EPERM), their
command compared on the 32 bits the kernel reads, so a high bit set cannot slip past.
"""

from __future__ import annotations

import pytest

from .conftest import run_python_json

pytestmark = pytest.mark.root

# _IOW(0x94, nr, struct btrfs_ioctl_vol_args{,_v2}); vol_args is 4096 bytes.
ATTEMPTS = r"""
import ctypes, errno, json, os, struct
libc = ctypes.CDLL(None, use_errno=True)
libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]
CMDS = {"SUBVOL_CREATE": 0x5000940E, "SUBVOL_CREATE_V2": 0x50009418, "SNAP_CREATE": 0x50009401,
        "SNAP_CREATE_V2": 0x50009417, "SNAP_DESTROY": 0x5000940F, "SNAP_DESTROY_V2": 0x5000943F,
        "SUBVOL_CREATE|1<<32": 0x1_5000940E}
os.makedirs("/work/vols", exist_ok=True)
d = os.open("/work/vols", os.O_RDONLY | os.O_DIRECTORY)
root = os.open("/", os.O_RDONLY | os.O_DIRECTORY)
out = {}
for name, cmd in CMDS.items():
    buf = ctypes.create_string_buffer(4096)
    struct.pack_into("q", buf, 0, root)          # fd: the source for snapshots
    sub = ("v_" + name.replace("|", "_").replace("<", "").replace(" ", "")).encode()
    if "V2" in name:                              # vol_args_v2: fd, transid, flags, unused[4], name at 64
        buf[64:64 + len(sub)] = sub
    else:
        buf[8:8 + len(sub)] = sub
    rc = libc.ioctl(d, cmd, buf)
    out[name] = "ok" if rc == 0 else errno.errorcode[ctypes.get_errno()]
out["made"] = sorted(os.listdir("/work/vols"))
print(json.dumps(out))
"""


def test_subvolume_ioctls_are_refused(sandboxes):
    rec = sandboxes.create(disk_mb=1024)
    res = run_python_json(sandboxes, rec, ATTEMPTS)
    made = res.pop("made")
    assert made == [], f"the tenant made subvolumes in its tree: {made}"
    assert all(v == "EPERM" for v in res.values()), res


def test_reflink_copies_and_terminals_still_work(sandboxes):
    """The ioctls tenants need stay: FICLONE (``cp --reflink``) and a terminal's own."""
    rec = sandboxes.create()
    res = sandboxes.sh(rec, "mkdir -p /work && head -c 1048576 /dev/urandom > /work/a && cp --reflink=always /work/a /work/b"
                            " && cmp /work/a /work/b && echo same && python3 -c 'import os,pty,fcntl,termios,struct;"
                            "m,s=pty.openpty();print(struct.unpack(\"HHHH\",fcntl.ioctl(s,termios.TIOCGWINSZ,bytes(8))))'")
    assert res["exit_code"] == 0, res
    assert "same" in res["out"] and "(0, 0, 0, 0)" in res["out"], res
