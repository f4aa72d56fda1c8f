"""The cellbox Python SDK: sandboxes, their processes, files, terminals and tunnels.

Shaped like Tensorlake's (``tensorlake.Sandbox``)::

    from cellbox import Sandbox

    with Sandbox.create(cpus=1, memory_mb=1024) as sbx:          # terminated on exit
        print(sbx.run("python3", ["-c", "print(6 * 7)"]).stdout)  # 42

``AsyncSandbox`` is the same API with ``await``. The async code is the source
(``_async/``); the sync code (``_sync/``) is generated from it by ``scripts/unasync.py``.
Every error raised derives from :class:`cellbox.errors.CellboxError` (alias ``SandboxError``).
"""

from ..errors import CellboxError, Conflict, InternalFailure, InvalidRequest, LimitExceeded, NotFound
from ._async import AsyncImages, AsyncProcess, AsyncPty, AsyncSandbox, AsyncSandboxClient, AsyncTunnel, AsyncVolumes
from ._errors import (
    CopyError,
    ImageBuildError,
    ImageNotFoundError,
    PermissionDenied,
    SandboxConnectionError,
    SandboxError,
    SandboxNotFoundError,
    SandboxStartError,
    SandboxUnavailable,
    SnapshotError,
    SnapshotNotFoundError,
    VolumeNotFoundError,
    WaitTimeout,
)
from ._image import Image
from ._process_models import HealthCheck, PtySession, RestartPolicy
from ._models import CommandResult, DirectoryEntry, ImageInfo, OutputLine, ProcessInfo, SandboxInfo, SnapshotInfo
from ._sync import Images, Process, Pty, Sandbox, SandboxClient, Tunnel, Volumes
from ._volume_models import VolumeInfo, VolumeMount, VolumeVersion

__all__ = [
    "AsyncImages",
    "AsyncProcess",
    "AsyncPty",
    "AsyncSandbox",
    "AsyncSandboxClient",
    "AsyncTunnel",
    "AsyncVolumes",
    "CellboxError",
    "CommandResult",
    "Conflict",
    "CopyError",
    "DirectoryEntry",
    "HealthCheck",
    "Image",
    "ImageBuildError",
    "ImageInfo",
    "ImageNotFoundError",
    "Images",
    "InternalFailure",
    "InvalidRequest",
    "LimitExceeded",
    "NotFound",
    "OutputLine",
    "PermissionDenied",
    "Process",
    "ProcessInfo",
    "Pty",
    "PtySession",
    "RestartPolicy",
    "Sandbox",
    "SandboxClient",
    "SandboxConnectionError",
    "SandboxError",
    "SandboxInfo",
    "SandboxNotFoundError",
    "SandboxStartError",
    "SandboxUnavailable",
    "SnapshotError",
    "SnapshotInfo",
    "SnapshotNotFoundError",
    "Tunnel",
    "VolumeInfo",
    "VolumeMount",
    "VolumeNotFoundError",
    "VolumeVersion",
    "Volumes",
    "WaitTimeout",
]
