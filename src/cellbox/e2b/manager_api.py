"""Everything the E2B view uses of the manager, in one place.

The manager is being redesigned (issue 11: spec.py / lifecycle.py / service.py …); when
its modules move, this file is the one to change. Only ``SandboxService``'s public
methods and attributes are used, plus ``record`` / ``save`` (the store the service
itself exposes as ``service.store``) and ``images`` (the catalog list).
"""

from __future__ import annotations

from typing import Any

from ..manager import agent_client
from ..manager.records import SandboxRecord, Status
from ..manager.spec import CreateSpec
from ..manager.service import Changes, CreateOptions, SandboxService
from ..manager.snapshot_store import SnapshotRecord, SnapshotType

__all__ = ["agent_client", "SandboxRecord", "Status", "CreateSpec", "Changes", "CreateOptions", "SandboxService",
           "SnapshotRecord", "SnapshotType", "record", "save", "images"]


def record(service: SandboxService, sandbox_id: str) -> SandboxRecord | None:
    """The record of a sandbox by ID, whatever its project (None: no such sandbox)."""
    return service.store.get(sandbox_id)


def save(service: SandboxService, rec: SandboxRecord) -> None:
    service.store.update(rec)


def images(service: SandboxService) -> list[Any]:
    """The image catalog (``ImageInfo`` items: name, digest, created_at, in_use)."""
    return list(service.manager.image_manager.list())
