"""Live use of one sandbox, read from the host's side: cgroup (v1 hybrid) and veth counters.

Read from the kernel, not asked of the agent: the tenant owns the agent and could
report anything, and a read of a few sysfs files costs microseconds whatever the
sandbox is doing. The host veth's counters are the sandbox's seen from the bridge, so
the host's rx is the sandbox's tx.
"""

from __future__ import annotations

from pathlib import Path

from .. import ids

CGROUP = Path("/sys/fs/cgroup")
NET = Path("/sys/class/net")


def _int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


V1 = (CGROUP / "cpuacct").is_dir()  # this host: cgroups v1 hybrid; decided once, not per read


def sample(sandbox_id: str) -> dict[str, int | None]:
    """CPU time (ns), memory in use (bytes), network bytes in and out, now."""
    rel = ids.cgroup_path(sandbox_id).lstrip("/")
    if V1:
        cpu = _int(CGROUP / "cpuacct" / rel / "cpuacct.usage")
        mem = _int(CGROUP / "memory" / rel / "memory.usage_in_bytes")
    else:
        cpu = _usage_usec(CGROUP / rel / "cpu.stat")
        mem = _int(CGROUP / rel / "memory.current")
    if cpu is None:  # no cgroup (not started yet, or gone): no veth either
        return {"cpu_ns": None, "memory_bytes": None, "net_in": None, "net_out": None}
    veth = NET / ids.host_veth(sandbox_id) / "statistics"
    return {"cpu_ns": cpu, "memory_bytes": mem, "net_in": _int(veth / "tx_bytes"), "net_out": _int(veth / "rx_bytes")}


def _usage_usec(stat: Path) -> int | None:
    try:
        for line in stat.read_text().splitlines():
            if line.startswith("usage_usec"):
                return int(line.split()[1]) * 1000
    except (OSError, ValueError, IndexError):
        pass
    return None
