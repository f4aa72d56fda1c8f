"""What the cluster store hands out: plain frozen rows, no database handles."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class NodeInfo:
    """What a node tells the cluster about itself when it registers."""

    id: str
    address: str  # host:port of its data path (the proxy sends sandbox traffic here)
    capacity_sandboxes: int
    capacity_mem_mb: int
    labels: dict[str, str] = field(default_factory=dict)
    fingerprint: dict[str, str] = field(default_factory=dict)
    images: tuple[str, ...] = ()


@dataclass(frozen=True)
class NodeRow:
    id: str
    address: str
    capacity_sandboxes: int
    capacity_mem_mb: int
    labels: dict[str, str]
    fingerprint: dict[str, str]
    images: tuple[str, ...]
    state: str
    epoch: int
    alive: bool  # lease in the future by the database's clock
    sandboxes: int = 0  # placed on it and not gone
    mem_mb: int = 0  # their memory


@dataclass(frozen=True)
class Lease:
    """A node's right to act: its epoch and when the lease ends (monotonic, local)."""

    node_id: str
    epoch: int
    local_deadline: float


@dataclass(frozen=True)
class Command:
    id: int
    sandbox_id: str
    node_id: str
    kind: str
    payload: dict[str, Any]
    generation: int
    state: str
    result: dict[str, Any] | None = None
    error: str | None = None


@dataclass(frozen=True)
class ClusterSandbox:
    id: str
    project: str
    name: str | None
    node_id: str | None
    local_id: str | None
    state: str
    desired_state: str
    generation: int
    image: str | None
    memory_mb: int
    reason: str | None
    snapshot_id: str | None
    spec: dict[str, Any]
