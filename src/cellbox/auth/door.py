"""Everything the front door needs, opened once per server process."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from ..config import Settings
from . import bootstrap
from .audit import Audit
from .guard import Authenticator
from .image_owners import ImageOwners
from .snapshot_quota import SnapshotQuota
from .store import AuthStore
from .vault import Vault


@dataclass
class Door:
    store: AuthStore
    auth: Authenticator
    vault: Vault
    images: ImageOwners  # whose each image is (api/image_access.py)
    snapshot_quota: SnapshotQuota
    audit: Audit  # failed authentications and proxy calls (auth/audit.py)

    @classmethod
    def open(cls, settings: Settings, db: sqlite3.Connection) -> Door:
        """On the server's database connection; makes the admin and vault keys if missing
        (``cellbox setup`` normally did), so a server never starts without a way in."""
        store = AuthStore(db)
        path, made = bootstrap.ensure_admin_key(settings, store)
        if made:
            print(f"cellbox server: made the first admin key, stored in {path} (mode 0600)", flush=True)
        return cls(store, Authenticator(store), Vault(bootstrap.vault_key_path(settings)), ImageOwners(db), SnapshotQuota(db),
                   Audit(store))
