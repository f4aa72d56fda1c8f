"""/proc and /sys from inside a sandbox: no writes to kernel settings, masked paths stay
masked, no kernel addresses, no way to overwrite the host binary behind PID 1 (the
CVE-2019-5736 class), no file descriptor of the agent or runc in a started process,
no writable host path in the mount table.

Most of these are regression guards for what runc's masked/read-only paths and our
mounts already give (they passed before the walls work too); each is asserted on
what the kernel answered, and the /proc/1/exe one on the host's file.
"""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from .conftest import run_python_json

pytestmark = pytest.mark.root




WRITES = r"""
import json, os
targets = ["/proc/sys/kernel/panic", "/proc/sys/kernel/core_pattern", "/proc/sys/vm/drop_caches",
           "/proc/sys/kernel/modprobe", "/proc/sys/fs/pipe-max-size", "/proc/sysrq-trigger",
           "/sys/kernel/uevent_helper", "/sys/kernel/mm/transparent_hugepage/enabled",
           "/sys/kernel/debug/x", "/sys/fs/cgroup/pids/pids.max", "/sys/class/net/eth0/mtu",
           "/proc/self/attr/current", "/proc/1/oom_score_adj_x"]
out = {}
for t in targets:
    try:
        with open(t, "w") as f:
            f.write("1\n")
        st = os.stat(t)
        # a masked file is /dev/null bind-mounted over the real one: the write went nowhere
        out[t] = "devnull" if os.major(st.st_rdev) == 1 and os.minor(st.st_rdev) == 3 else "written"
    except OSError as e:
        out[t] = e.errno
print(json.dumps(out))
"""


def test_kernel_settings_are_not_writable(box):
    sb, rec = box
    before = {p: open(p).read() for p in ("/proc/sys/kernel/panic", "/proc/sys/kernel/core_pattern",
                                           "/proc/sys/fs/pipe-max-size")}
    out = run_python_json(sb, rec, WRITES)
    written = {t: v for t, v in out.items() if v == "written"}
    assert written == {}, f"writable from a sandbox: {written}"
    # judged on the host: its settings are what they were
    assert before == {p: open(p).read() for p in before}


MASKED = r"""
import json, os
out = {}
for p in ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug", "/proc/latency_stats",
          "/proc/acpi", "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap"]:
    try:
        if os.path.isdir(p):
            out[p] = {"entries": os.listdir(p)}
        else:
            with open(p, "rb") as f:
                out[p] = {"bytes": len(f.read(4096))}
    except OSError as e:
        out[p] = {"errno": e.errno}
with open("/proc/kallsyms") as f:
    addrs = [line.split()[0] for _, line in zip(range(2000), f)]
out["kallsyms_nonzero"] = sum(1 for a in addrs if int(a, 16) != 0)
out["kallsyms_lines"] = len(addrs)
print(json.dumps(out))
"""


def test_masked_paths_and_kallsyms(box):
    sb, rec = box
    out = run_python_json(sb, rec, MASKED)
    for path, got in out.items():
        if path.startswith("kallsyms"):
            continue
        assert got in ({"bytes": 0}, {"entries": []}) or "errno" in got, f"{path} is readable: {got}"
    assert out["kallsyms_lines"] > 0 and out["kallsyms_nonzero"] == 0, out


def _agent_exe_digest(rec) -> tuple[int, str]:
    # /proc/<pid>/exe opened from the host is the very inode PID 1 runs (a host file).
    with open(f"/proc/{rec.init_pid}/exe", "rb") as f:
        return os.fstat(f.fileno()).st_ino, hashlib.sha256(f.read()).hexdigest()


def test_proc_1_exe_cannot_overwrite_the_host_binary(box):
    """CVE-2019-5736 class: PID 1's executable, reached through /proc/1/exe or
    /proc/1/map_files, is a host file (the agent's loader in the read-only /.cellbox
    tree); opening it for writing fails and the host file is unchanged."""
    sb, rec = box
    before = _agent_exe_digest(rec)
    code = r"""
import json, os
out = {}
try:  # the agent is closed to tenant ptrace (agent/hardening.py): so are its map_files
    maps = ["/proc/1/map_files/" + n for n in sorted(os.listdir("/proc/1/map_files"))[:3]]
except PermissionError:
    maps = []
    out["/proc/1/map_files"] = "EACCES"
for p in ["/proc/1/exe", "/proc/self/exe"] + maps:
    try:
        fd = os.open(p, os.O_WRONLY | os.O_APPEND)
        os.write(fd, b"\x00pwned")
        os.close(fd)
        out[p] = "written"
    except OSError as e:
        out[p] = e.errno
print(json.dumps(out))
"""
    out = run_python_json(sb, rec, code)
    assert out.get("/proc/1/exe") != "written", out
    assert not any(v == "written" for k, v in out.items() if k.startswith("/proc/1/")), out
    assert _agent_exe_digest(rec) == before


FDS = r"""
import json, os
fds = {}
for n in os.listdir("/proc/self/fd"):
    try:
        fds[n] = os.readlink(f"/proc/self/fd/{n}")
    except OSError:
        pass  # the directory fd listdir used, already closed
print(json.dumps(fds))
"""


def test_started_processes_inherit_only_stdio(box):
    """No descriptor of the agent (its sockets, logs) or of runc reaches a process the
    agent starts, whether run with pipes or on a PTY."""
    sb, rec = box
    fds = run_python_json(sb, rec, FDS)
    assert sorted(fds, key=int) == ["0", "1", "2"], fds
    to_file = FDS.replace("print(json.dumps(fds))", "open('/tmp/fds.json', 'w').write(json.dumps(fds))")
    with sb.agent(rec) as agent:
        r = agent.post("/api/v1/pty", json={"command": "python3", "args": ["-c", to_file]})
        assert r.status_code == 201, r.text
    res = sb.sh(rec, "for i in $(seq 100); do [ -s /tmp/fds.json ] && break; sleep 0.1; done; cat /tmp/fds.json")
    pty_fds = json.loads(res["out"])
    assert sorted(pty_fds, key=int) == ["0", "1", "2"], pty_fds


MOUNTS = r"""
import json
rows = []
for line in open("/proc/self/mountinfo"):
    left, right = line.split(" - ")
    f = left.split()
    fstype, source, sopts = right.split()[:3]
    rows.append({"root": f[3], "point": f[4], "opts": f[5], "fstype": fstype, "source": source})
print(json.dumps(rows))
"""


def test_no_writable_host_path_in_the_mount_table(box):
    """Every writable mount is the sandbox's own: its rootfs subvolume or a kernel
    filesystem made for it (proc, tmpfs, devpts, mqueue); every bind from the host
    (the agent's tree, masked paths) is read-only."""
    sb, rec = box
    rows = run_python_json(sb, rec, MOUNTS)
    own_kinds = {"proc", "tmpfs", "devpts", "mqueue"}
    # In a user namespace no device node can be made, so runc binds the host's harmless
    # character devices (OCI's default set) and masks with /dev/null: each is a node,
    # not a tree, and writing /dev/null or /dev/zero reaches nothing.
    oci_devices = {"/null", "/zero", "/full", "/random", "/urandom", "/tty"}
    bad = []
    for row in rows:
        writable = "rw" in row["opts"].split(",")
        if not writable or row["fstype"] in own_kinds:
            continue
        if row["fstype"] == "devtmpfs" and row["root"] in oci_devices:
            continue
        if row["point"] == "/" and row["fstype"] == "btrfs" and row["root"].endswith(f"/sandboxes/{rec.id}"):
            continue
        bad.append(row)
    assert bad == [], f"writable mounts from the host: {json.dumps(bad)}"
    assert any(r["point"] == "/" for r in rows)
