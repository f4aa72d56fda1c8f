"""cgroup facts the OCI runtime does not report (OOM kills), and re-limiting a warm sandbox.

runc creates and removes the cgroups. Both layouts are handled: cgroup v1 (this host:
``memory.oom_control`` has an ``oom_kill`` line) and v2 (``memory.events``).

:func:`set_limits` writes a running container's limits straight into its cgroup files
instead of spawning ``runc update`` (~10-12 ms of process start per warm claim, which
is most of a claim's cost in a burst). It leaves runc's own ``state.json`` with the
limits the container started with; that is safe because nothing reads them back:
cellbox never runs ``runc update``, ``runc checkpoint`` applies no limits, and ``runc
restore`` builds a new container from the bundle's ``config.json`` and applies *its*
resources (runc ``criuApplyCgroups``), so the caller rewrites ``config.json`` too
(``bundle.set_limits``).
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
DEFAULT_SHARES = 1024  # v1 cpu.shares when none is set
DEFAULT_WEIGHT = 100  # v2 cpu.weight when none is set
NO_SWAP_V2 = "0"  # memory.swap.max: memory + swap == memory, as the OCI config asks


def _write(path: Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def set_limits(cgroup_path: str, *, cpu_quota: int, cpu_period: int, memory_bytes: int, pids: int) -> None:
    """Apply CPU quota, memory (swap equal to it: no swap) and pids limits in place,
    and the default CPU weight (a warm sandbox was built at the lowest).

    Raises ``OSError`` if a file cannot be written (the cgroup is gone, a value is
    refused); the caller then throws the sandbox away.
    """
    rel = cgroup_path.lstrip("/")
    if (ROOT / "cpu" / rel).is_dir():  # v1 (also the hybrid layout: controllers are on v1)
        cpu, mem, pid = ROOT / "cpu" / rel, ROOT / "memory" / rel, ROOT / "pids" / rel
        _write(cpu / "cpu.cfs_period_us", str(cpu_period))
        _write(cpu / "cpu.cfs_quota_us", str(cpu_quota))
        _write(cpu / "cpu.shares", str(DEFAULT_SHARES))
        # memory <= memory+swap must hold after each write: raise the pair from the top,
        # lower it from the bottom (as runc does).
        memsw = mem / "memory.memsw.limit_in_bytes"
        order = ["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"]
        if memsw.exists() and memory_bytes > int(memsw.read_text()):
            order.reverse()
        for name in order:
            if (mem / name).exists():
                _write(mem / name, str(memory_bytes))
        _write(pid / "pids.max", str(pids))
        return
    d = ROOT / rel
    _write(d / "cpu.max", f"{cpu_quota} {cpu_period}")
    _write(d / "cpu.weight", str(DEFAULT_WEIGHT))
    _write(d / "memory.max", str(memory_bytes))
    if (d / "memory.swap.max").exists():
        _write(d / "memory.swap.max", NO_SWAP_V2)
    _write(d / "pids.max", str(pids))


def limits(cgroup_path: str) -> dict[str, int]:
    """The CPU quota/period, memory and pids limits now in force (for tests and checks)."""
    rel = cgroup_path.lstrip("/")
    if (ROOT / "cpu" / rel).is_dir():
        def read(*parts: str) -> int:
            return int((ROOT.joinpath(*parts)).read_text())

        return {
            "cpu_quota": read("cpu", rel, "cpu.cfs_quota_us"), "cpu_period": read("cpu", rel, "cpu.cfs_period_us"),
            "cpu_shares": read("cpu", rel, "cpu.shares"),
            "memory_bytes": read("memory", rel, "memory.limit_in_bytes"), "pids": read("pids", rel, "pids.max"),
        }
    d = ROOT / rel
    quota, period = (d / "cpu.max").read_text().split()
    return {"cpu_quota": int(quota), "cpu_period": int(period), "cpu_shares": int((d / "cpu.weight").read_text()),
            "memory_bytes": int((d / "memory.max").read_text()), "pids": int((d / "pids.max").read_text())}


def _memory_dir(cgroup_path: str) -> Path:
    rel = cgroup_path.lstrip("/")
    v1 = ROOT / "memory" / rel
    return v1 if v1.exists() else ROOT / rel


def oom_kills(cgroup_path: str) -> int:
    d = _memory_dir(cgroup_path)
    for name in ("memory.oom_control", "memory.events"):
        try:
            for line in (d / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except (FileNotFoundError, ValueError, OSError):
            continue
    return 0


def leftover_cgroups(prefix: str | None = None) -> list[Path]:
    """Per-sandbox cgroup directories still present under ``prefix`` (default: this
    instance's parent, ``ids.CGROUP_PARENT``) in any hierarchy."""
    from .. import ids

    prefix = prefix or ids.CGROUP_PARENT
    found: list[Path] = []
    for hierarchy in ROOT.iterdir():
        base = hierarchy / prefix
        if base.is_dir():
            found += [p for p in base.iterdir() if p.is_dir()]
    unified = ROOT / "unified" / prefix
    if unified.is_dir():
        found += [p for p in unified.iterdir() if p.is_dir()]
    return found
