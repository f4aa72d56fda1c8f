"""What the SDK returns: plain, typed dataclasses built from the wire JSON.

Every model keeps the full JSON it was built from in ``raw``, so fields the server adds
later are reachable without an SDK release.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


def _opt_int(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class SandboxInfo:
    """A sandbox as the lifecycle API describes it (``GET /sandboxes/{id}``)."""

    id: str
    status: str
    name: str | None = None
    image: str | None = None
    cpus: float | None = None
    memory_mb: int | None = None
    disk_mb: int | None = None
    timeout_secs: int | None = None
    exposed_ports: list[int] = field(default_factory=list)
    allow_unauthenticated_access: bool = False
    created_at: int | None = None
    terminated_at: int | None = None
    termination_reason: str | None = None
    sandbox_url: str | None = None
    routing_hint: str | None = None
    namespace: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def file_systems(self) -> list[dict[str, Any]]:
        """Mounted volumes: ``{file_system_id, mount_path, read_only, snapshot_id?}``."""
        return list(self.raw.get("file_systems") or [])

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SandboxInfo:
        res = data.get("resources") or {}
        return cls(
            id=str(data.get("id") or data.get("sandbox_id") or ""),
            status=str(data.get("status") or data.get("state") or "unknown"),
            name=data.get("name"),
            image=data.get("image"),
            cpus=float(res["cpus"]) if isinstance(res.get("cpus"), (int, float)) else None,
            memory_mb=_opt_int(res.get("memory_mb")),
            disk_mb=_opt_int(res.get("disk_mb")),
            timeout_secs=_opt_int(data.get("timeout_secs")),
            exposed_ports=[int(p) for p in data.get("exposed_ports") or []],
            allow_unauthenticated_access=bool(data.get("allow_unauthenticated_access", False)),
            created_at=_opt_int(data.get("created_at")),
            terminated_at=_opt_int(data.get("terminated_at")),
            termination_reason=data.get("termination_reason"),
            sandbox_url=data.get("sandbox_url"),
            routing_hint=data.get("routing_hint"),
            namespace=data.get("namespace"),
            raw=dict(data),
        )


@dataclass(frozen=True)
class SnapshotInfo:
    """A snapshot as the lifecycle API describes it (``GET /snapshots/{id}``).

    ``status`` is ``in_progress``, ``completed``, ``failed`` (see ``error``) or
    ``deleting``; ``snapshot_type`` is ``filesystem`` or ``memory``. A snapshot outlives
    the sandbox it was taken from (``sandbox_id``).
    """

    id: str
    status: str
    sandbox_id: str | None = None
    snapshot_type: str | None = None
    namespace: str | None = None
    base_image: str | None = None
    created_at: int | None = None
    size_bytes: int | None = None
    error: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def completed(self) -> bool:
        """True once the snapshot can be restored (``completed``, or Tensorlake's ``local_ready``)."""
        return self.status in ("completed", "local_ready")

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SnapshotInfo:
        error = data.get("error")
        return cls(
            id=str(data.get("id") or data.get("snapshot_id") or ""),
            status=str(data.get("status") or "unknown"),
            sandbox_id=data.get("sandbox_id"),
            snapshot_type=data.get("snapshot_type"),
            namespace=data.get("namespace"),
            base_image=data.get("base_image"),
            created_at=_opt_int(data.get("created_at")),
            size_bytes=_opt_int(data.get("size_bytes")),
            error=error if error is None or isinstance(error, str) else str(error),
            raw=dict(data),
        )


@dataclass(frozen=True)
class CommandResult:
    """The outcome of ``Sandbox.run``: output lines joined with ``\\n`` (no trailing newline).

    ``exit_code`` is the process's exit status, or ``-signal`` when a signal ended it;
    ``timed_out`` is true when the ``timeout`` given to ``run`` killed it.
    """

    exit_code: int
    stdout: str
    stderr: str
    signal: int | None = None
    timed_out: bool = False
    oom_killed: bool = False
    pid: int | None = None

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


@dataclass(frozen=True)
class ProcessInfo:
    """A process as the in-sandbox agent describes it (``GET /api/v1/processes/{pid}``)."""

    pid: int
    status: str
    command: str
    args: list[str] = field(default_factory=list)
    exit_code: int | None = None
    signal: int | None = None
    oom_killed: bool = False
    stdin_writable: bool = False
    started_at: int | None = None
    ended_at: int | None = None
    name: str | None = None
    managed: dict[str, Any] | None = None  # supervised processes: status, restart_count, health_status, …
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def running(self) -> bool:
        return self.status == "running"

    @property
    def restart_count(self) -> int:
        count = (self.managed or {}).get("restart_count")
        return count if isinstance(count, int) else 0

    @property
    def health_status(self) -> str | None:
        """``disabled``, ``starting``, ``healthy`` or ``unhealthy``; None if not managed."""
        status = (self.managed or {}).get("health_status")
        return status if isinstance(status, str) else None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ProcessInfo:
        managed = data.get("managed") or {}
        return cls(
            pid=int(data["pid"]),
            status=str(data.get("status", "unknown")),
            command=str(data.get("command", "")),
            args=[str(a) for a in data.get("args") or []],
            exit_code=_opt_int(data.get("exit_code")),
            signal=_opt_int(data.get("signal")),
            oom_killed=bool(data.get("oom_killed", False)),
            stdin_writable=bool(data.get("stdin_writable", False)),
            started_at=_opt_int(data.get("started_at")),
            ended_at=_opt_int(data.get("ended_at")),
            name=managed.get("name") if isinstance(managed, dict) else None,
            managed=dict(managed) if isinstance(managed, dict) and managed else None,
            raw=dict(data),
        )


@dataclass(frozen=True)
class DirectoryEntry:
    """One entry of ``Sandbox.list_directory``."""

    name: str
    is_dir: bool
    size: int | None = None
    modified_at: int | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DirectoryEntry:
        return cls(
            name=str(data["name"]),
            is_dir=bool(data.get("is_dir", False)),
            size=_opt_int(data.get("size")),
            modified_at=_opt_int(data.get("modified_at")),
        )


@dataclass(frozen=True)
class OutputLine:
    """One line of a process's output, as ``Sandbox.run(on_output=...)`` reports it."""

    line: str
    stream: str = "stdout"
    timestamp: int | None = None


@dataclass
class ImageInfo:
    """A named image as the lifecycle API describes it (``GET /images/{name}``).

    ``kind`` is ``oci`` (the default image, a Dockerfile build or a registry pull) or
    ``snapshot`` (a registered snapshot); ``source`` says where it came from (``build``,
    ``pull``, ``register``, ``local``). A ``prebooted`` image carries a memory snapshot:
    sandboxes created from it are restored, not booted. ``in_use`` counts the live
    sandboxes made from it (an image in use cannot be removed); ``warm_pool`` is how many
    ready sandboxes it keeps, ``warm_ready`` how many are ready now.
    """

    name: str
    kind: str
    source: str
    digest: str | None = None
    snapshot_id: str | None = None
    prebooted: bool = False
    warmup: list[str] | None = None
    size_bytes: int | None = None
    layers: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    created_at: int | None = None
    in_use: int = 0
    warm_pool: int = 0
    warm_ready: int = 0
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ImageInfo:
        return cls(
            name=str(data.get("name") or ""),
            kind=str(data.get("kind") or "oci"),
            source=str(data.get("source") or "local"),
            digest=data.get("digest"),
            snapshot_id=data.get("snapshot_id"),
            prebooted=bool(data.get("prebooted")),
            warmup=data.get("warmup"),
            size_bytes=data.get("size_bytes"),
            layers=list(data.get("layers") or []),
            config=dict(data.get("config") or {}),
            created_at=data.get("created_at"),
            in_use=int(data.get("in_use") or 0),
            warm_pool=int(data.get("warm_pool") or 0),
            warm_ready=int(data.get("warm_ready") or 0),
            raw=data,
        )
