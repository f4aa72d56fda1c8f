"""Admission: a project's quotas and secrets, checked before anything is made.

Kept apart from the service's create flow because it is the door's policy (keys,
quotas, sealed secrets: ``auth/``) applied to a create, not the create itself: holds
are taken atomically across processes sharing the database and released when the
create ends, however it ends.
"""

from __future__ import annotations

from typing import Any

from .. import ids
from ..auth.door import Door
from ..errors import InvalidRequest, QuotaExceeded, RateLimited, SecretNotFound
from .snapshot_store import SnapshotStore
from .spec import DEFAULT_DISK_MB, CreateSpec


class Admission:
    def __init__(self, door: Door | None, snapshots: SnapshotStore) -> None:
        self.door = door  # None: no quotas and no secrets (tests)
        self.snapshots = snapshots
        self.volumes: Any = None  # manager/volumes.VolumeManager, for volume_bytes (volumes hook)

    def secret_env(self, namespace: str, secret_names: tuple[str, ...]) -> dict[str, str]:
        """The create's ``secret_names`` as variables, decrypted; 400 naming unknown ones."""
        names = list(dict.fromkeys(secret_names))
        if not names:
            return {}
        if self.door is None:
            raise InvalidRequest("secret_names: this server keeps no secrets")
        sealed = self.door.store.sealed_secrets(namespace, names)
        if missing := [n for n in names if n not in sealed]:
            raise SecretNotFound(missing, in_create=True)
        return {n: self.door.vault.open(sealed[n]) for n in names}

    def admit(self, spec: CreateSpec, sid: str, *, copies: int = 1) -> list[str]:
        """Check the project's quotas and hold the resources of ``copies`` new sandboxes;
        returns the hold IDs (released by ``release``). Atomic across processes."""
        if self.door is None:
            return []
        store = self.door.store
        limits = store.get_quota(spec.namespace)
        if not limits:
            return []
        disk = spec.disk_mb or DEFAULT_DISK_MB
        holds: list[str] = []
        for i in range(copies):
            hold = sid if i == 0 else ids.new_id()
            verdict = store.admit_create(spec.namespace, hold, spec.cpus, spec.memory_mb, disk, limits)
            if verdict is None:
                holds.append(hold)
                continue
            self.release(holds)
            if isinstance(verdict, int):
                raise RateLimited(f"project {spec.namespace!r}: more than {limits['creates_per_minute']:g} creates "
                                  f"a minute; retry in {verdict} s", retry_after=verdict)
            name, value, use = verdict
            raise QuotaExceeded(f"project {spec.namespace!r}: quota {name} is {value:g}, {use:g} in use; "
                                "this create would pass it")
        return holds

    def release(self, holds: list[str]) -> None:
        if self.door is not None:
            for hold in holds:
                self.door.store.release_hold(hold)

    def quota_usage(self, project: str) -> dict[str, float]:
        """A project's use of each quota'd resource (for ``GET /quotas/{project}``)."""
        assert self.door is not None
        use: dict[str, float] = self.door.store.usage(project)
        use.update(self.door.snapshot_quota.usage(project))
        if self.volumes is not None:  # volumes hook
            use["volume_bytes"] = sum(v.size_mb for v in self.volumes.list(project)) << 20
        return use

    def admit_snapshot(self, project: str) -> tuple[str, dict[str, float]] | None:
        """Hold one snapshot of ``project`` against its quota (atomic across processes);
        returns ``(hold, limits)`` for ``release_snapshot``/``check_snapshot_bytes``."""
        if self.door is None or not (limits := self.door.store.get_quota(project)):
            return None
        hold = ids.new_id()
        verdict = self.door.snapshot_quota.admit(project, hold, limits)
        if verdict is not None:
            name, value, use = verdict
            raise QuotaExceeded(f"project {project!r}: quota {name} is {value:g}, {use:g} in use")
        return hold, limits

    def release_snapshot(self, admitted: tuple[str, dict[str, float]] | None) -> None:
        if admitted is not None and self.door is not None:
            self.door.snapshot_quota.release(admitted[0])

    def snapshot_bytes_over(self, project: str, admitted: tuple[str, dict[str, float]] | None) -> str | None:
        """The refusal message if the completed snapshots now pass the byte limit."""
        if admitted is None or self.door is None:
            return None
        over = self.door.snapshot_quota.bytes_over(project, admitted[1])
        if over is None:
            return None
        return f"project {project!r}: quota snapshot_bytes is {over[0]:g}, this snapshot would make it {over[1]:g}"
