"""The first admin key and the vault key, made by ``cellbox setup`` (and a server start).

So the first minute on a fresh machine needs no key handling: root's CLI and SDK find
``<data dir>/admin.key`` (mode 0600) on their own (``cellbox.credentials``).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ..config import Settings
from . import keys, vault
from .keys import Role
from .store import AuthStore

ADMIN_PROJECT = "default"


def admin_key_path(settings: Settings) -> Path:
    return settings.data_dir / "admin.key"


def vault_key_path(settings: Settings) -> Path:
    return settings.data_dir / "secrets.key"


def ensure_admin_key(settings: Settings, store: AuthStore | None = None) -> tuple[Path, bool]:
    """Create an admin key and store it at ``admin.key`` if no admin key exists yet.

    Also when ``admin.key`` is there but names a key the database does not hold (the
    database was reset): the file is replaced. An admin key in the database and no
    file means the admin removed it on purpose; it is left so. Returns (path, made).
    """
    path = admin_key_path(settings)
    own = store is None
    if store is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(str(settings.db_path), isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        store = AuthStore(db)
    try:
        if store.has_admin_key() and _file_key_valid(path, store):
            return path, False
        if store.has_admin_key() and not path.exists():
            return path, False
        key_id, full, key_hash = keys.new_key()
        store.add_key(key_id, key_hash, ADMIN_PROJECT, Role.ADMIN, name="setup")
        vault.write_private(path, (full + "\n").encode())
        return path, True
    finally:
        if own:
            store.db.close()


def _file_key_valid(path: Path, store: AuthStore) -> bool:
    try:
        parsed = keys.parse(path.read_text().strip())
    except FileNotFoundError:
        return False
    if parsed is None:
        return False
    row = store.get_key(parsed[0])
    return row is not None and row.revoked_at is None and keys.matches(parsed[1], row.hash)
