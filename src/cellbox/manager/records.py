"""What the manager knows about a sandbox, as stored in SQLite."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import Any

from .owner import this_process


class Status(str, enum.Enum):
    """Wire values of Tensorlake's SandboxStatus (spec §2.2, §4.1)."""

    PENDING = "pending"
    RUNNING = "running"
    SNAPSHOTTING = "snapshotting"
    SUSPENDING = "suspending"
    SUSPENDED = "suspended"
    TERMINATED = "terminated"
    FAILED = "failed"

    @property
    def is_final(self) -> bool:
        return self in (Status.TERMINATED, Status.FAILED)


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class SandboxRecord:
    id: str
    namespace: str
    image: str
    cpus: float
    memory_mb: int
    disk_mb: int
    status: Status = Status.PENDING
    name: str | None = None
    ip: str | None = None
    pids_limit: int = 1024
    timeout_secs: int | None = None
    created_at: int = field(default_factory=now_ms)
    terminated_at: int | None = None
    termination_reason: str | None = None
    error: str | None = None
    init_pid: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # Set through the API (spec §2.1, §2.4); the proxy reads the first two.
    exposed_ports: list[int] = field(default_factory=list)
    allow_unauthenticated_access: bool = False
    auto_resume: bool = True
    entrypoint: list[str] | None = None
    # The process that created the record (see manager/owner.py); stamped on creation.
    owner: str | None = field(default_factory=this_process)
