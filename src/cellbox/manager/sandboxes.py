"""The old name of ``lifecycle.py`` (kept so imports of ``cellbox.manager.sandboxes``
go on working while the other branches merge; new code imports ``lifecycle``/``spec``)."""

from __future__ import annotations

from .assemble import no_space
from .lifecycle import SandboxManager
from .spec import DEFAULT_DISK_MB, MIN_FREE_DISK_MB, MIN_MEMORY_MB, CreateSpec

__all__ = ["DEFAULT_DISK_MB", "MIN_FREE_DISK_MB", "MIN_MEMORY_MB", "CreateSpec", "SandboxManager", "no_space"]
