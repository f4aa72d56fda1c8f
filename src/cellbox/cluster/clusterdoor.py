"""The front door of a control-plane replica, on the cluster's PostgreSQL.

``auth.door.Door`` with its key store (keys, quotas, secrets, audit) in PostgreSQL
(``keystore.PgAuthStore``) instead of the replica's SQLite, so every replica admits the
same keys and a revoke through any of them is seen by all within ``ROW_TTL``. What
stays per replica: image ownership and snapshot holds (tables of the single-host
server the cluster API does not use yet) in the replica's own ``cellbox.db``, and the
vault key file (``secrets.key``), which every replica must share like the cluster key.

The key routes are the single-host server's handlers (``api/door.py``), mounted on the
cluster app: the same wire, the same checks.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from fastapi import FastAPI

from ..api import door as door_routes
from ..auth import bootstrap
from ..auth.audit import Audit
from ..auth.door import Door
from ..auth.guard import Authenticator
from ..auth.image_owners import ImageOwners
from ..auth.snapshot_quota import SnapshotQuota
from ..auth.vault import Vault
from ..config import Settings
from .keystore import PgAuthStore

# The door's routes a replica serves (api/door.py): keys, the audit log, secrets, and
# the Tensorlake platform reads. Quotas are served with the cluster's usage (below).
_SERVED = {"/keys", "/keys/{key_id}", "/audit", "/platform/v1/keys/introspect", "/platform/v1/organizations",
           "/platform/v1/organizations/{org}/projects", "/platform/v1/organizations/{org}/projects/{project}",
           "/quotas/{project}"}


class _Usage:
    """What ``api/door.get_quota`` asks ``app.state.service`` for: the cluster's rows."""

    def __init__(self, store: PgAuthStore) -> None:
        self.store = store

    def quota_usage(self, project: str) -> dict[str, float]:
        return self.store.usage(project)


def open_door(settings: Settings, dsn: str, db: sqlite3.Connection) -> Door:
    """The replica's door; makes the first admin key (in PostgreSQL) if there is none."""
    store = PgAuthStore(dsn)
    path, made = bootstrap.ensure_admin_key(settings, store)  # type: ignore[arg-type]
    if made:
        print(f"cellbox server (cluster): made the first admin key, stored in {path} (mode 0600)", flush=True)
    return Door(store, Authenticator(store), Vault(bootstrap.vault_key_path(settings)),  # type: ignore[arg-type]
                ImageOwners(db), SnapshotQuota(db), Audit(store))  # type: ignore[arg-type]


def mount(app: FastAPI, door: Door) -> None:
    """The door's routes on the cluster app (under the app's AuthGate, like every route)."""
    app.state.door = door
    app.state.service = _Usage(door.store)  # type: ignore[arg-type]
    routes: list[tuple[str, str, Any]] = [*door_routes.FLAT_ROUTES, *door_routes.ROUTES]
    for method, path, handler in routes:
        if path in _SERVED or path.startswith("/secrets"):
            app.add_api_route(path, handler, methods=[method])
