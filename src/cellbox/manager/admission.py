"""Admission: a project's quotas and secrets, checked before anything is made.

Kept apart from the service's create flow because it is the door's policy (keys,
quotas, sealed secrets: ``auth/``) applied to a create, not the create itself: holds
are taken atomically across processes sharing the database and released when the
create ends, however it ends.
"""

from __future__ import annotations

from .. import ids
from ..auth.door import Door
from ..errors import InvalidRequest, QuotaExceeded, RateLimited, SecretNotFound
from .snapshot_store import SnapshotStore
from .spec import DEFAULT_DISK_MB, CreateSpec


class Admission:
    def __init__(self, door: Door | None, snapshots: SnapshotStore) -> None:
        self.door = door  # None: no quotas and no secrets (tests)
        self.snapshots = snapshots

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
        snaps = self.snapshots.list(project, None)
        use["snapshots"] = len(snaps)
        use["snapshot_bytes"] = sum(s.size_bytes or 0 for s in snaps)
        return use

    def check_snapshot_quota(self, project: str) -> None:
        if self.door is None or not (limits := self.door.store.get_quota(project)):
            return
        use = self.quota_usage(project)
        for name in ("snapshots", "snapshot_bytes"):
            value = limits.get(name)
            if value is not None and use[name] + (1 if name == "snapshots" else 0) > value:
                raise QuotaExceeded(f"project {project!r}: quota {name} is {value:g}, {use[name]:g} in use")
