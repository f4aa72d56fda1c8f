"""runc 1.1.5 (Debian 12) lacks the fixes for CVE-2025-31133, CVE-2025-52565 and
CVE-2025-52881 (runc 1.2.8 / 1.3.3). Why they do not reach the host here (walls
issue, hole 6), checked from the host's side:

* All three end the same way: runc is raced (through a tenant-controlled rootfs or
  mount) into leaving a *writable* bind mount or an fd of a host-global procfs file
  (``/proc/sys/kernel/core_pattern``, ``/proc/sysrq-trigger``) in the container, or
  into writing to one itself from runc init; the write is what escapes. With a user
  namespace per sandbox, both the tenant and runc init (which runs after joining the
  namespace) hold only the sandbox's uid, unmapped root's files deny it whatever the
  mount's flags: :func:`test_sandbox_root_cannot_open_host_proc_files_for_writing`.
* CVE-2025-52565 needs a console: runc bind-mounts the pty over ``/dev/console`` only
  for ``process.terminal: true``. cellbox never asks for a terminal (PTYs are the
  agent's, made inside) and never uses ``runc exec``.
* CVE-2025-31133 needs runc to find an attacker's ``/dev/null`` (a symlink) when it
  masks paths: ``/dev`` is always a fresh tmpfs runc makes, and no tenant process runs
  in the container before runc's init is done (a new sandbox has none; a restore's
  tasks are rebuilt by CRIU afterwards).
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

pytestmark = pytest.mark.root

# The usual targets (those this kernel has: no sysrq, modprobe or uevent_helper here).
CANDIDATES = ["/proc/sys/kernel/core_pattern", "/proc/sysrq-trigger", "/proc/sys/kernel/modprobe",
              "/sys/kernel/uevent_helper", "/proc/sys/kernel/poweroff_cmd", "/proc/sys/vm/drop_caches",
              "/sys/kernel/mm/transparent_hugepage/enabled"]
HOST_GLOBAL = [p for p in CANDIDATES if os.path.exists(p)]

# Opens each file for writing and closes it without writing a byte: on a host without
# the fix the open would succeed and nothing would change.
PROBE = """
import errno, json, os, sys
out = {}
for p in sys.argv[1:]:
    try:
        os.close(os.open(p, os.O_WRONLY))
        out[p] = "opened"
    except OSError as e:
        out[p] = errno.errorcode[e.errno]
print(json.dumps(out))
"""


def test_sandbox_root_cannot_open_host_proc_files_for_writing(sandboxes):
    """What a raced runc would hand the tenant: the host's procfs, writable mounts and
    all. A process with the sandbox's credentials (its user namespace, root there, every
    capability) is refused by the kernel."""
    assert len(HOST_GLOBAL) >= 3, HOST_GLOBAL
    rec = sandboxes.create(memory_mb=256)
    res = subprocess.run(
        ["nsenter", f"--user=/proc/{rec.init_pid}/ns/user", "--setuid", "0", "--setgid", "0",
         "python3", "-c", PROBE, *HOST_GLOBAL],
        capture_output=True, text=True, timeout=30,
    )
    assert res.returncode == 0, res.stderr  # before: no user namespace of its own to enter
    got = json.loads(res.stdout)
    assert all(v in ("EACCES", "EPERM") for v in got.values()), got


def test_no_console_no_exec(sandboxes, settings):
    """CVE-2025-52565 is runc's /dev/console bind mount: never made here."""
    rec = sandboxes.create(memory_mb=256)
    cfg = json.loads((settings.sandboxes_dir / rec.id / "config.json").read_text())
    assert cfg["process"]["terminal"] is False
    res = sandboxes.sh(rec, "test -e /dev/console && echo present || echo absent")
    assert res["out"] == "absent", res
