"""Reading cgroup facts the OCI runtime does not report: OOM kills, usage.

runc creates and removes the cgroups; we only read them. Both layouts are handled:
cgroup v1 (this host: ``memory.oom_control`` has an ``oom_kill`` line) and v2
(``memory.events``).
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path("/sys/fs/cgroup")


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


def leftover_cgroups(prefix: str = "cellbox") -> list[Path]:
    """Per-sandbox cgroup directories still present under ``prefix`` in any hierarchy."""
    found: list[Path] = []
    for hierarchy in ROOT.iterdir():
        base = hierarchy / prefix
        if base.is_dir():
            found += [p for p in base.iterdir() if p.is_dir()]
    unified = ROOT / "unified" / prefix
    if unified.is_dir():
        found += [p for p in unified.iterdir() if p.is_dir()]
    return found
