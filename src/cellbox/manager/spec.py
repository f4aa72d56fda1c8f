"""A create request, validated once, before anything is made: pure (no I/O but the
host's size, passed in by the caller or read once).

Why one place: a named image validated the request three times and a create from a
snapshot not at all (it silently dropped the request's cpus and memory). Now every
source goes through ``validate``, and ``explicit`` says which resources the client
named, so a restore applies exactly those (``for_snapshot``) and keeps the snapshot's
own for the rest.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from .. import ids
from ..errors import InvalidRequest
from ..network.policy import EgressPolicy

MIN_MEMORY_MB = 64
MIN_FREE_DISK_MB = 64
DEFAULT_DISK_MB = 10240
RESOURCES = ("cpus", "memory_mb", "disk_mb", "pids_limit")


@dataclass(frozen=True)
class CreateSpec:
    image: str | None = None
    cpus: float = 1.0
    memory_mb: int = 1024
    disk_mb: int | None = None
    pids_limit: int = 1024
    name: str | None = None
    namespace: str = "default"
    timeout_secs: int | None = None
    # A pre-chosen ID (the API answers a non-blocking create with it before the
    # sandbox exists); a warm sandbox keeps its own.
    sandbox_id: str | None = None
    # Egress policy (None: unrestricted); its host names are resolved before any part
    # of the sandbox is made, so a name that does not resolve costs nothing.
    network: EgressPolicy | None = None
    # cgroup CPU weight (v1 cpu.shares) to start with; None is the kernel's default.
    # The warm pool builds at the lowest weight, so a refill takes only the CPU the
    # sandboxes in use leave idle; a claim restores the default (warm.py).
    cpu_shares: int | None = None
    # Which of RESOURCES the client named (the API sets it): a create from a snapshot
    # applies these and keeps the snapshot's values for the others.
    explicit: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class Host:
    """The host's size, which bounds a request (read once; a test passes its own)."""

    cpus: int
    memory_mb: int

    @classmethod
    def this(cls) -> Host:
        return cls(os.cpu_count() or 1, os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") >> 20)


def validate(spec: CreateSpec, host: Host | None = None) -> None:
    """400 naming the first field out of bounds; nothing else."""
    host = host or Host.this()
    if not (0.01 <= spec.cpus <= host.cpus):
        raise InvalidRequest(f"cpus must be between 0.01 and {host.cpus} (this host's cores), got {spec.cpus}")
    if not (MIN_MEMORY_MB <= spec.memory_mb <= host.memory_mb):
        raise InvalidRequest(f"memory_mb must be between {MIN_MEMORY_MB} and {host.memory_mb}, got {spec.memory_mb}")
    if spec.disk_mb is not None and spec.disk_mb <= 0:
        raise InvalidRequest(f"disk_mb must be positive, got {spec.disk_mb}")
    if not (16 <= spec.pids_limit <= 1 << 20):
        raise InvalidRequest(f"pids_limit must be between 16 and 1048576, got {spec.pids_limit}")
    if spec.name is not None and (problem := ids.name_problem(spec.name)):
        raise InvalidRequest(problem)
    if spec.timeout_secs is not None and spec.timeout_secs < 0:
        raise InvalidRequest("timeout_secs must be >= 0")


def disk_mb(spec: CreateSpec, image_mb: int) -> int:
    """The rootfs size: the request's, or the default; 400 if it cannot hold the image."""
    size = spec.disk_mb or max(DEFAULT_DISK_MB, image_mb + MIN_FREE_DISK_MB)
    if size < image_mb + MIN_FREE_DISK_MB:
        raise InvalidRequest(
            f"disk_mb={size} is too small for the image ({image_mb} MiB): "
            f"ask for at least {image_mb + MIN_FREE_DISK_MB}"
        )
    return size


def for_snapshot(spec: CreateSpec, snapshot: dict[str, int | float]) -> dict[str, int | float]:
    """The resources of a sandbox restored from a snapshot whose own are ``snapshot``:
    those the request named (``spec.explicit``), the snapshot's for the rest."""
    asked: dict[str, int | float | None] = {"cpus": spec.cpus, "memory_mb": spec.memory_mb, "disk_mb": spec.disk_mb,
                                            "pids_limit": spec.pids_limit}
    out: dict[str, int | float] = dict(snapshot)
    for k in RESOURCES:
        value = asked[k]
        if k in spec.explicit and value is not None:
            out[k] = value
    return out
