"""A tmpfs for CRIU's kernel-feature cache, so CRIU probes the kernel once per boot.

Why (issue 15, memory state): every ``criu`` run (dump, restore, the lazy-pages daemon)
first probes the kernel (pagemap, vdso, CPU features, ...: 50-120 ms of its log on
this host) unless it finds ``criu.kdat``, which it writes only if the file's directory
is a tmpfs (so a reboot, i.e. a new kernel, drops it: ``criu/kerndat.c``). Debian's
``/run`` is a tmpfs on a normal host but not in this project's VMs, where CRIU logged
"File /run/criu.kdat does not exist" on every run. ``scripts/ensure-criu.sh`` builds
CRIU with ``RUNDIR=/run/cellbox/criu``; this module makes that directory a small
tmpfs of root's when it is not on one already. Without it CRIU still works (it warns
"Can't keep kdat cache on non-tempfs" and probes each time).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

KDAT_DIR = Path("/run/cellbox/criu")
TMPFS_MAGIC = 0x01021994


def on_tmpfs(path: Path) -> bool:
    try:
        out = subprocess.run(["stat", "-f", "-c", "%t", str(path)], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return False
    return int(out.stdout.strip() or "0", 16) == TMPFS_MAGIC


def ensure(path: Path = KDAT_DIR) -> bool:
    """Make ``path`` a root-only tmpfs (1 MiB) unless it is on one; True if it is now."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if on_tmpfs(path):
        return True
    if os.geteuid() != 0:
        return False
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700,nosuid,nodev,noexec", "cellbox-criu",
                          str(path)], capture_output=True, text=True)
    return res.returncode == 0 and on_tmpfs(path)


def release(path: Path = KDAT_DIR) -> str:
    """Unmount the tmpfs ``ensure`` made (``cellbox setup --release``, after the suite).

    Only a mount of ours (source ``cellbox-criu``) is touched: a host whose ``/run`` is
    a tmpfs already has nothing to release. The next server start mounts it again.
    """
    for line in Path("/proc/self/mounts").read_text().splitlines():
        source, target = line.split()[:2]
        if source == "cellbox-criu" and target == str(path):
            res = subprocess.run(["umount", str(path)], capture_output=True, text=True)
            return f"{path} unmounted" if res.returncode == 0 else f"{path} not unmounted: {res.stderr.strip()}"
    return f"{path} is not a mount of ours"
